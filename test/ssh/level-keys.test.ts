// loadOrCreateLevelKeys: generated once, 0600/0700, reused, fingerprint as OpenSSH prints it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stat, readFile } from "node:fs/promises";
import { join } from "node:path";
import { loadOrCreateLevelKeys } from "../../src/ssh/level-keys.js";
import { tempDir, run } from "../helpers/git-fixtures.js";

test("level keys are generated with private modes and reused on restart", async () => {
  const t = await tempDir();
  try {
    const dir = join(t.path, "keys");
    const a = await loadOrCreateLevelKeys(dir, { name: "l1" });
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(a.hostKeyPath)).mode & 0o777, 0o600);
    assert.equal((await stat(a.userKeyPath)).mode & 0o777, 0o600);
    assert.match(a.publicKey, /^ssh-ed25519 AAAA[A-Za-z0-9+/]+=* hsd@l1$/);
    assert.match(a.hostKeyFingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    const hostBefore = await readFile(a.hostKeyPath, "utf8");
    const b = await loadOrCreateLevelKeys(dir, { name: "l1" });
    assert.deepEqual(b, a);
    assert.equal(await readFile(b.hostKeyPath, "utf8"), hostBefore);
  } finally {
    await t.cleanup();
  }
});

test("fingerprints match ssh-keygen and OpenSSH can use the user key", async () => {
  const t = await tempDir();
  try {
    const k = await loadOrCreateLevelKeys(join(t.path, "keys"), { name: "l0" });
    const host = await run("ssh-keygen", ["-l", "-f", k.hostKeyPath]);
    assert.equal(host.code, 0, host.stderr);
    assert.equal(host.stdout.split(" ")[1], k.hostKeyFingerprint);
    const user = await run("ssh-keygen", ["-y", "-f", k.userKeyPath]);
    assert.equal(user.code, 0, user.stderr);
    assert.equal(user.stdout.trim().split(" ").slice(0, 2).join(" "), k.publicKey.split(" ").slice(0, 2).join(" "));
  } finally {
    await t.cleanup();
  }
});

test("generated key pairs are always well-formed (ssh2 alone drops leading zero bytes)", async () => {
  const { generateEd25519KeyPair } = await import("../../src/ssh/level-keys.js");
  const { parsePublicKeyLine } = await import("../../src/ssh/key-fingerprint.js");
  // ~1 in 128 raw ssh2 keys is malformed; 1000 pairs make a miss all but certain to show.
  for (let i = 0; i < 1000; i++) {
    const p = generateEd25519KeyPair("t");
    assert.equal(parsePublicKeyLine(p.public).blob.length, 51);
  }
});
