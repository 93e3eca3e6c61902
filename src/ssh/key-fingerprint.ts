// OpenSSH-style key fingerprints and public-key line parsing for the SSH
// endpoint, the key store and the client's host-key pinning.
// Imported by: src/ssh.

import { createHash } from "node:crypto";
import ssh2 from "ssh2";

const { utils } = ssh2; // CommonJS: no ESM named exports
import { InvalidArgumentError } from "../domain/errors.js";

/** "SHA256:<base64 without padding>" of an SSH wire-format public key blob, as `ssh-keygen -l` prints it. */
export function keyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

export interface ParsedPublicKey {
  readonly type: string;
  readonly blob: Buffer;
  readonly comment: string;
  readonly fingerprint: string;
  /** Normalised "type base64 comment" line. */
  readonly line: string;
}

const ALLOWED_TYPES = new Set([
  "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
]);

/** Parses one OpenSSH public key line; InvalidArgument on anything else (never echoes the input). */
export function parsePublicKeyLine(line: string): ParsedPublicKey {
  if (typeof line !== "string" || line.length > 16_384 || /[\r\n\0]/.test(line.trim())) {
    throw new InvalidArgumentError("not a single-line OpenSSH public key");
  }
  const m = /^(\S+)\s+([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$/.exec(line.trim());
  if (!m || !ALLOWED_TYPES.has(m[1]!)) throw new InvalidArgumentError("not an OpenSSH public key (expected e.g. ssh-ed25519 AAAA...)");
  const parsed = utils.parseKey(`${m[1]} ${m[2]}`);
  if (parsed instanceof Error || Array.isArray(parsed) || parsed.isPrivateKey() || parsed.type !== m[1]) {
    throw new InvalidArgumentError("public key does not decode", { details: { type: m[1] } });
  }
  const blob = parsed.getPublicSSH();
  const comment = (m[3] ?? "").trim().replace(/[^\x20-\x7e]/g, "");
  return {
    type: m[1]!, blob, comment, fingerprint: keyFingerprint(blob),
    line: `${m[1]} ${blob.toString("base64")}${comment ? ` ${comment}` : ""}`,
  };
}

/** Fingerprint of the public half of a private key text (PEM or OpenSSH). */
export function privateKeyFingerprint(privateKeyText: string | Buffer): string {
  const parsed = utils.parseKey(privateKeyText);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new InvalidArgumentError("host key does not parse");
  return keyFingerprint(parsed.getPublicSSH());
}
