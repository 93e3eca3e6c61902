// The operator's ~/.ssh/known_hosts, read the way OpenSSH reads it: plain and
// hashed (|1|salt|hash) host patterns, [host]:port for a port other than 22,
// wildcards, negations, @revoked. hsctl --host checks a level's host key here
// and never trusts a key it does not find.
// Imported by: src/cli, src/ssh.

import { createHmac, timingSafeEqual } from "node:crypto";
import { readTextIfExists } from "../util/read-if-exists.js";
import { keyFingerprint } from "./key-fingerprint.js";

export interface KnownHostEntry {
  readonly marker?: "revoked" | "cert-authority";
  /** Comma-separated patterns, or one hashed name. */
  readonly patterns: string;
  readonly keyType: string;
  readonly blob: Buffer;
  /** 1-based line number, for the hint that names a stale line. */
  readonly line: number;
}

/** The name a host is filed under: "host" on port 22, "[host]:port" otherwise (as ssh and ssh-keyscan write it). */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host.toLowerCase() : `[${host.toLowerCase()}]:${port}`;
}

export function parseKnownHosts(text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const f = line.split(/\s+/);
    let marker: KnownHostEntry["marker"];
    if (f[0] === "@revoked" || f[0] === "@cert-authority") marker = f.shift()!.slice(1) as KnownHostEntry["marker"];
    if (f.length < 3) return;
    const blob = Buffer.from(f[2]!, "base64");
    if (blob.length === 0) return;
    out.push({ ...(marker ? { marker } : {}), patterns: f[0]!, keyType: f[1]!, blob, line: i + 1 });
  });
  return out;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.toLowerCase().replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`);
  return re.test(name);
}

/** Does an entry's host field name `name` ("host" or "[host]:port")? */
export function entryMatches(patterns: string, name: string): boolean {
  if (patterns.startsWith("|1|")) {
    const [, , salt, hash] = patterns.split("|");
    if (!salt || !hash) return false;
    const want = Buffer.from(hash, "base64");
    const got = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest();
    return want.length === got.length && timingSafeEqual(want, got);
  }
  let matched = false;
  for (const p of patterns.split(",")) {
    if (p.startsWith("!")) { if (globMatch(p.slice(1), name)) return false; }
    else if (globMatch(p, name)) matched = true;
  }
  return matched;
}

export type HostKeyVerdict =
  | { readonly kind: "known" }
  | { readonly kind: "unknown"; readonly fingerprint: string }
  | { readonly kind: "changed"; readonly fingerprint: string; readonly knownFingerprints: readonly string[]; readonly lines: readonly number[] }
  | { readonly kind: "revoked"; readonly fingerprint: string };

/** What known_hosts says of `blob` (the SSH wire form of the key the server offered) for host:port. */
export function checkHostKey(entries: readonly KnownHostEntry[], host: string, port: number, keyType: string, blob: Buffer): HostKeyVerdict {
  const name = knownHostName(host, port);
  const fingerprint = keyFingerprint(blob);
  const same = (e: KnownHostEntry) => e.blob.length === blob.length && timingSafeEqual(e.blob, blob);
  if (entries.some((e) => e.marker === "revoked" && same(e))) return { kind: "revoked", fingerprint };
  const mine = entries.filter((e) => !e.marker && entryMatches(e.patterns, name));
  if (mine.some(same)) return { kind: "known" };
  const sameType = mine.filter((e) => e.keyType === keyType);
  if (sameType.length > 0) {
    return { kind: "changed", fingerprint, knownFingerprints: sameType.map((e) => keyFingerprint(e.blob)), lines: sameType.map((e) => e.line) };
  }
  return { kind: "unknown", fingerprint };
}

export async function readKnownHosts(path: string): Promise<KnownHostEntry[]> {
  return parseKnownHosts((await readTextIfExists(path)) ?? "");
}
