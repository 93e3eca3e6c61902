// OpenSSH's SHA256 fingerprint of a public key blob, and the same of a
// "<type> <base64>" line read without ssh2 (config checks a pinned key with it).
// Imported by: src/ssh, src/config, src/providers.

import { createHash } from "node:crypto";

/** "SHA256:<base64 without padding>" of an SSH wire-format public key blob, as `ssh-keygen -l` prints it. */
export function sshKeyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/**
 * A public key line's type, blob and fingerprint; undefined when it is not
 * "<type> <base64>" with a blob that names that type (a comment may follow).
 */
export function publicKeyLineFingerprint(line: string): { type: string; blob: Buffer; fingerprint: string } | undefined {
  const m = /^([a-z0-9@.-]+) ([A-Za-z0-9+/]+={0,2})(?: [^\r\n]*)?$/.exec(line.trim());
  if (!m) return undefined;
  const blob = Buffer.from(m[2]!, "base64");
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len + 4 > blob.length || blob.subarray(4, 4 + len).toString("latin1") !== m[1]) return undefined;
  return { type: m[1]!, blob, fingerprint: sshKeyFingerprint(blob) };
}
