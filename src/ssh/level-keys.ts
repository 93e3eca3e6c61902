// A level's own SSH identity: the endpoint's host key and the level's user key
// pair (what it authenticates to its parent with). Generated at first start,
// reused after.
// Imported by: src/daemon.

import { chmod, mkdir } from "node:fs/promises";
import { readTextIfExists as readIfExists } from "../util/read-if-exists.js";
import { hostname } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";

const { utils } = ssh2; // CommonJS: no ESM named exports
import { writeFileAtomic } from "../util/atomic-write.js";
import { StateCorruptError } from "../domain/errors.js";
import { parsePublicKeyLine, privateKeyFingerprint } from "./key-fingerprint.js";

export interface LevelKeys {
  readonly hostKeyPath: string;
  /** "SHA256:..." like OpenSSH prints it. */
  readonly hostKeyFingerprint: string;
  readonly userKeyPath: string;
  /** "ssh-ed25519 AAAA... hsd@<name>" */
  readonly publicKey: string;
}

/**
 * An ed25519 pair in OpenSSH format. ssh2's generator drops a leading zero
 * byte of the public key (about 1 key in 128 comes out 31 bytes long and
 * malformed for every SSH implementation), so a pair is only returned once
 * both halves parse and agree.
 */
export function generateEd25519KeyPair(comment: string): { private: string; public: string } {
  for (let i = 0; i < 64; i++) {
    const pair = utils.generateKeyPairSync("ed25519", { comment });
    const pub = utils.parseKey(pair.public);
    const priv = utils.parseKey(pair.private);
    if (pub instanceof Error || Array.isArray(pub) || priv instanceof Error || Array.isArray(priv)) continue;
    if (pub.getPublicSSH().equals(priv.getPublicSSH())) return pair;
  }
  throw new StateCorruptError("could not generate a well-formed ed25519 key");
}

export async function loadOrCreateLevelKeys(keysDir: string, opts: { name?: string } = {}): Promise<LevelKeys> {
  await mkdir(keysDir, { recursive: true, mode: 0o700 });
  await chmod(keysDir, 0o700);
  const hostKeyPath = join(keysDir, "ssh_host_ed25519_key");
  const userKeyPath = join(keysDir, "id_ed25519");
  const pubPath = `${userKeyPath}.pub`;
  const comment = `hsd@${(opts.name ?? hostname()).replace(/[^A-Za-z0-9._-]/g, "_")}`;

  let hostKey = await readIfExists(hostKeyPath);
  if (hostKey === undefined) {
    hostKey = generateEd25519KeyPair(`${comment}-host`).private;
    await writeFileAtomic(hostKeyPath, hostKey, { mode: 0o600 });
  }
  let userKey = await readIfExists(userKeyPath);
  let pub = await readIfExists(pubPath);
  if (userKey === undefined) {
    const pair = generateEd25519KeyPair(comment);
    userKey = pair.private;
    pub = `${pair.public}\n`;
    await writeFileAtomic(userKeyPath, userKey, { mode: 0o600 });
    await writeFileAtomic(pubPath, pub, { mode: 0o600 });
  }
  let hostKeyFingerprint: string;
  try {
    hostKeyFingerprint = privateKeyFingerprint(hostKey);
  } catch (err) {
    throw new StateCorruptError("level host key does not parse", { details: { path: hostKeyPath }, cause: err });
  }
  if (pub === undefined) {
    // The .pub file is derived data; rebuild it from the private key.
    const parsed = utils.parseKey(userKey);
    if (parsed instanceof Error || Array.isArray(parsed)) {
      throw new StateCorruptError("level user key does not parse", { details: { path: userKeyPath } });
    }
    pub = `ssh-ed25519 ${parsed.getPublicSSH().toString("base64")} ${comment}\n`;
    await writeFileAtomic(pubPath, pub, { mode: 0o600 });
  }
  const publicKey = parsePublicKeyLine(pub.trim()).line;
  return { hostKeyPath, hostKeyFingerprint, userKeyPath, publicKey };
}
