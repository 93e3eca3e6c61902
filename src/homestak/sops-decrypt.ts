// Decrypts a sops-encrypted secrets.yaml.enc (age recipients) in memory: the
// data key comes from the `age` CLI over pipes (the operator's age identity
// file never leaves disk, the key and values never touch it), each value is
// AES-256-GCM with its key path as additional data, and the file's MAC is
// checked before anything is returned. Errors name the file, never a value.
// Imported by: src/homestak/site-config.ts, src/daemon.

import { spawn } from "node:child_process";
import { createDecipheriv, createHash } from "node:crypto";
import { parseDocument } from "yaml";
import { SecretsEncryptedError } from "../domain/errors.js";
import { isTree, type SecretTree, type SecretValue } from "../secrets/secrets-store.js";

/** Decrypts one age-armored blob with an identity file; resolves to the plaintext (never written anywhere). */
export type AgeDecrypt = (armored: string, identityFile: string) => Promise<Buffer>;

const ENC_RE = /^ENC\[AES256_GCM,data:(.*),iv:(.+),tag:(.+),type:(.+)\]$/;
const MAX_AGE_OUTPUT = 4096;
const AGE_TIMEOUT_MS = 10_000;

/** The real `age --decrypt`, bounded in time and output. */
export const ageCli: AgeDecrypt = (armored, identityFile) => new Promise((resolve, reject) => {
  const p = spawn("age", ["--decrypt", "-i", identityFile], { stdio: ["pipe", "pipe", "pipe"] });
  const out: Buffer[] = [];
  let size = 0;
  let err = "";
  const timer = setTimeout(() => p.kill("SIGKILL"), AGE_TIMEOUT_MS);
  p.stdout.on("data", (c: Buffer) => { size += c.length; if (size <= MAX_AGE_OUTPUT) out.push(c); else p.kill("SIGKILL"); });
  p.stderr.setEncoding("utf8").on("data", (c: string) => { if (err.length < 500) err += c; });
  p.on("error", (e) => { clearTimeout(timer); reject(e); });
  p.on("close", (code) => {
    clearTimeout(timer);
    if (code === 0 && size <= MAX_AGE_OUTPUT) resolve(Buffer.concat(out));
    else reject(new Error(`age exited ${code}: ${err.split("\n")[0] ?? ""}`));
  });
  p.stdin.end(armored);
});

interface Meta {
  age: { recipient: string; enc: string }[];
  lastmodified: string;
  mac: string;
  unencryptedSuffix: string;
  encryptedSuffix: string;
  unencryptedRegex?: RegExp;
  encryptedRegex?: RegExp;
  macOnlyEncrypted: boolean;
}

/** sops' fixed MAC prefix when only encrypted values are MACed (its mac_only_encrypted). */
const MAC_ONLY_ENCRYPTED_INIT = Buffer.from("8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69", "hex");

function fail(file: string, why: string): SecretsEncryptedError {
  return new SecretsEncryptedError(`${file}: cannot decrypt: ${why}`, { details: { file, reason: why } });
}

function meta(file: string, v: SecretValue | undefined): Meta {
  if (!isTree(v)) throw fail(file, "no sops metadata");
  const age = Array.isArray(v.age) ? v.age.filter(isTree).map((a) => ({ recipient: String(a.recipient ?? ""), enc: String(a.enc ?? "") })) : [];
  if (age.length === 0) throw fail(file, "no age recipient in its sops metadata (only age is supported)");
  const re = (x: SecretValue | undefined) => (typeof x === "string" && x ? new RegExp(x) : undefined);
  return {
    age, lastmodified: String(v.lastmodified ?? ""), mac: String(v.mac ?? ""),
    unencryptedSuffix: typeof v.unencrypted_suffix === "string" ? v.unencrypted_suffix : "",
    encryptedSuffix: typeof v.encrypted_suffix === "string" ? v.encrypted_suffix : "",
    unencryptedRegex: re(v.unencrypted_regex), encryptedRegex: re(v.encrypted_regex),
    macOnlyEncrypted: v.mac_only_encrypted === true,
  };
}

/** sops' rule for whether the value at `path` is encrypted. */
function encryptedAt(m: Meta, path: string[]): boolean {
  let enc = true;
  if (m.unencryptedSuffix && path.some((p) => p.endsWith(m.unencryptedSuffix))) enc = false;
  if (m.encryptedSuffix) enc = path.some((p) => p.endsWith(m.encryptedSuffix));
  if (m.unencryptedRegex && path.some((p) => m.unencryptedRegex!.test(p))) enc = false;
  if (m.encryptedRegex) enc = path.some((p) => m.encryptedRegex!.test(p));
  return enc;
}

function decryptValue(file: string, value: string, key: Buffer, aad: string): string | number | boolean {
  const m = ENC_RE.exec(value);
  if (!m) throw fail(file, "a value that should be encrypted is not in sops' ENC[...] form");
  const [data, iv, tag] = [m[1]!, m[2]!, m[3]!].map((b) => Buffer.from(b, "base64"));
  let plain: string;
  try {
    const d = createDecipheriv("aes-256-gcm", key, iv!);
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(tag!);
    plain = Buffer.concat([d.update(data!), d.final()]).toString("utf8");
  } catch {
    throw fail(file, "a value does not authenticate (wrong key or a tampered file)");
  }
  switch (m[4]) {
    case "int": return Number.parseInt(plain, 10);
    case "float": return Number.parseFloat(plain);
    case "bool": return plain.toLowerCase() === "true";
    default: return plain; // str, bytes, time
  }
}

/** sops' bytes of a plaintext value for the MAC. */
function macBytes(v: string | number | boolean): string {
  if (typeof v === "boolean") return v ? "True" : "False";
  return String(v);
}

/**
 * Decrypts sops YAML text with the first identity file that opens its data
 * key. Throws SecretsEncrypted (naming the file and why) on any failure.
 */
export async function decryptSopsYaml(text: string, file: string, identityFiles: readonly string[], age: AgeDecrypt = ageCli): Promise<SecretTree> {
  const doc = parseDocument(text, { prettyErrors: false });
  if (doc.errors.length > 0) throw fail(file, "not valid YAML");
  let tree: unknown;
  try { tree = doc.toJS(); } catch { throw fail(file, "YAML cannot be resolved (aliases)"); }
  if (!isTree(tree)) throw fail(file, "not a YAML mapping");
  const m = meta(file, tree.sops);
  let key: Buffer | undefined;
  for (const id of identityFiles) {
    for (const r of m.age) {
      key = await age(r.enc, id).catch(() => undefined);
      if (key?.length === 32) break;
      key = undefined;
    }
    if (key) break;
  }
  if (!key) throw fail(file, `no age identity (${identityFiles.join(", ") || "none found"}) opens its data key`);
  const hash = createHash("sha512");
  if (m.macOnlyEncrypted) hash.update(MAC_ONLY_ENCRYPTED_INIT);
  const walk = (v: SecretValue, path: string[]): SecretValue => {
    if (v === null) return null;
    if (Array.isArray(v)) return v.map((x) => walk(x, path));
    if (isTree(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, [...path, k])]));
    const enc = encryptedAt(m, path);
    const out = enc ? decryptValue(file, String(v), key!, `${path.join(":")}:`) : (v as string | number | boolean);
    if (!m.macOnlyEncrypted || enc) hash.update(macBytes(out));
    return out;
  };
  const { sops: _meta, ...data } = tree;
  const plain = walk(data, []) as SecretTree;
  const mac = decryptValue(file, m.mac, key, m.lastmodified);
  if (String(mac).toUpperCase() !== hash.digest("hex").toUpperCase()) throw fail(file, "MAC mismatch (the file was changed after it was encrypted)");
  return plain;
}

/** Where sops looks for the operator's age identities: SOPS_AGE_KEY_FILE, else the user's sops/age/keys.txt. */
export function ageIdentityFiles(env: NodeJS.ProcessEnv): string[] {
  if (env.SOPS_AGE_KEY_FILE) return [env.SOPS_AGE_KEY_FILE];
  const base = env.XDG_CONFIG_HOME || (env.HOME ? `${env.HOME}/.config` : "");
  return base ? [`${base}/sops/age/keys.txt`] : [];
}
