// Builds a sops-encrypted YAML file (age recipient) the way sops lays it out:
// 32-byte GCM nonces, each value's key path as additional data, a SHA-512
// MAC over the plaintext values under the lastmodified time. The data key is
// wrapped by the real age CLI. Shared by the sops tests.
import { execFileSync } from "node:child_process";
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import { stringify } from "yaml";

export const LASTMOD = "2026-11-30T12:00:00Z";

function enc(value: string, key: Buffer, aad: string, type: string): string {
  const iv = randomBytes(32);
  const c = createCipheriv("aes-256-gcm", key, iv);
  c.setAAD(Buffer.from(aad));
  const data = Buffer.concat([c.update(value, "utf8"), c.final()]);
  return `ENC[AES256_GCM,data:${data.toString("base64")},iv:${iv.toString("base64")},tag:${c.getAuthTag().toString("base64")},type:${type}]`;
}

/** A fresh age identity written to keyFile; returns its recipient. */
export function ageKeygen(keyFile: string): string {
  execFileSync("age-keygen", ["-o", keyFile], { stdio: "ignore" });
  return execFileSync("age-keygen", ["-y", keyFile], { encoding: "utf8" }).trim();
}

type Plain = string | number | boolean | Plain[] | { [k: string]: Plain };

/** sops YAML of `tree` for `recipient`; keys ending in _unencrypted stay plain (and are MACed). */
export function sopsYaml(tree: { [k: string]: Plain }, recipient: string): string {
  const dataKey = randomBytes(32);
  const armored = execFileSync("age", ["-r", recipient, "-a"], { input: dataKey, encoding: "utf8" });
  const hash = createHash("sha512");
  const walk = (v: Plain, path: string[]): Plain => {
    if (Array.isArray(v)) return v.map((x) => walk(x, path));
    if (typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, [...path, k])]));
    const text = typeof v === "boolean" ? (v ? "True" : "False") : String(v);
    hash.update(text);
    if (path.some((p) => p.endsWith("_unencrypted"))) return v;
    const type = typeof v === "boolean" ? "bool" : typeof v === "number" ? "int" : "str";
    return enc(typeof v === "boolean" ? String(v) : String(v), dataKey, `${path.join(":")}:`, type);
  };
  const data = walk(tree, []) as Record<string, Plain>;
  const mac = enc(hash.digest("hex").toUpperCase(), dataKey, LASTMOD, "str");
  return stringify({
    ...data,
    sops: { age: [{ recipient, enc: armored }], lastmodified: LASTMOD, mac, unencrypted_suffix: "_unencrypted", version: "3.9.4" },
  });
}
