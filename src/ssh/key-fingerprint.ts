// OpenSSH-style key fingerprints and public-key line parsing for the SSH
// endpoint, the key store and the client's host-key pinning.
// Imported by: src/ssh.

import ssh2 from "ssh2";
import { sshKeyFingerprint } from "../util/ssh-key-fingerprint.js";

const { utils } = ssh2; // CommonJS: no ESM named exports
import { InvalidArgumentError } from "../domain/errors.js";

/** "SHA256:<base64 without padding>" of an SSH wire-format public key blob, as `ssh-keygen -l` prints it. */
export const keyFingerprint = sshKeyFingerprint;

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
  return privateKeyPublic(privateKeyText).fingerprint;
}

/** The public half of a private key text: its fingerprint and its "<type> <base64>" line. */
export function privateKeyPublic(privateKeyText: string | Buffer): { fingerprint: string; line: string } {
  const parsed = utils.parseKey(privateKeyText);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new InvalidArgumentError("host key does not parse");
  const blob = parsed.getPublicSSH();
  return { fingerprint: keyFingerprint(blob), line: `${parsed.type} ${blob.toString("base64")}` };
}
