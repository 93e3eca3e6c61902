// AuthorizedKeyStore: validation, persistence, constant-time lookup, static keys.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { generateEd25519KeyPair } from "../../src/ssh/level-keys.js";
import { AuthorizedKeyStore } from "../../src/ssh/authorized-key-store.js";
import { silentLogger } from "../../src/log/logger.js";
import { HsError } from "../../src/domain/errors.js";
import { tempDir, run, makeKeyPair } from "../helpers/git-fixtures.js";

const blobOf = (pub: string) => Buffer.from(pub.split(" ")[1]!, "base64");

async function codeOf(p: Promise<unknown>): Promise<string> {
  try { await p; } catch (err) { assert.ok(err instanceof HsError); return err.code; }
  return "none";
}

test("addKey persists atomically (0600), survives reload, fingerprint matches ssh-keygen", async () => {
  const t = await tempDir();
  try {
    const path = join(t.path, "state", "authorized-keys.json");
    const kp = await makeKeyPair(t.path, "k1");
    const s = new AuthorizedKeyStore(path, silentLogger());
    await s.load();
    const added = await s.addKey({ publicKey: kp.publicKey, role: "reader" });
    const kg = await run("ssh-keygen", ["-l", "-f", `${kp.privatePath}.pub`]);
    assert.equal(added.fingerprint, kg.stdout.split(" ")[1]);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const s2 = new AuthorizedKeyStore(path, silentLogger());
    await s2.load();
    assert.deepEqual(await s2.listKeys(), [added]);
    assert.equal(s2.lookup("ssh-ed25519", blobOf(kp.publicKey))?.role, "reader");
  } finally {
    await t.cleanup();
  }
});

test("keys added at once are all in the file: a later write never lands before an earlier one", async () => {
  const t = await tempDir();
  try {
    const path = join(t.path, "state", "authorized-keys.json");
    const [k1, k2] = await Promise.all([makeKeyPair(t.path, "c1"), makeKeyPair(t.path, "c2")]);
    let second: Promise<unknown> | undefined;
    const s = new AuthorizedKeyStore(path, silentLogger(), {
      // The write that holds k1 alone is held at its rename until the second add has finished:
      // writes that overlap let that one finish first (and the held rename then replaces the
      // file without k2). Written one at a time, the second add cannot finish before it; the
      // hold ends at its bound instead.
      beforeRename: async (tmp) => {
        const held = (JSON.parse(await readFile(tmp, "utf8")) as { keys: unknown[] }).keys.length === 1;
        if (held) await Promise.race([second!.catch(() => {}), new Promise((r) => setTimeout(r, 300))]);
      },
    });
    await s.load();
    const first = s.addKey({ publicKey: k1.publicKey, role: "reader" });
    second = s.addKey({ publicKey: k2.publicKey, role: "reader" });
    await Promise.all([first, second]);
    const reloaded = new AuthorizedKeyStore(path, silentLogger());
    await reloaded.load();
    const fingerprints = async (store: AuthorizedKeyStore) => (await store.listKeys()).map((k) => k.fingerprint).sort();
    assert.equal((await fingerprints(reloaded)).length, 2);
    assert.deepEqual(await fingerprints(reloaded), await fingerprints(s));
  } finally {
    await t.cleanup();
  }
});

test("lookup finds only the exact key and checks every key", async () => {
  const t = await tempDir();
  try {
    const s = new AuthorizedKeyStore(join(t.path, "k.json"), silentLogger());
    const keys = [0, 1, 2].map((i) => generateEd25519KeyPair(`k${i}`).public);
    await s.addKey({ publicKey: keys[0]!, role: "reader" });
    await s.addKey({ publicKey: keys[1]!, role: "controller" });
    assert.equal(s.lookup("ssh-ed25519", blobOf(keys[1]!))?.role, "controller");
    assert.equal(s.lookup("ssh-ed25519", blobOf(keys[2]!)), undefined);
    assert.equal(s.lookup("ssh-ed25519", blobOf(keys[0]!).subarray(0, 20)), undefined);
    assert.equal(s.lookup("ssh-ed25519", Buffer.alloc(0)), undefined);
  } finally {
    await t.cleanup();
  }
});

for (const [what, line] of Object.entries({
  junk: "hello world",
  "private key text": "-----BEGIN OPENSSH PRIVATE KEY-----",
  "bad base64 body": "ssh-ed25519 AAAAnotakey",
  "type mismatch": `ssh-rsa ${generateEd25519KeyPair("t").public.split(" ")[1]}`,
  "two lines": `${generateEd25519KeyPair("t").public}\nssh-ed25519 AAAA`,
  "unsupported type": "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
  empty: "",
})) {
  test(`addKey refuses ${what} with InvalidArgument`, async () => {
    const t = await tempDir();
    try {
      const s = new AuthorizedKeyStore(join(t.path, "k.json"), silentLogger());
      assert.equal(await codeOf(s.addKey({ publicKey: line, role: "reader" })), "InvalidArgument");
      assert.deepEqual(await s.listKeys(), []);
    } finally {
      await t.cleanup();
    }
  });
}

test("addKey refuses an unknown role", async () => {
  const t = await tempDir();
  try {
    const s = new AuthorizedKeyStore(join(t.path, "k.json"), silentLogger());
    const pub = generateEd25519KeyPair("t").public;
    assert.equal(await codeOf(s.addKey({ publicKey: pub, role: "admin" as "reader" })), "InvalidArgument");
  } finally {
    await t.cleanup();
  }
});

test("removeKey by fingerprint or key; static keys are not persisted", async () => {
  const t = await tempDir();
  try {
    const path = join(t.path, "k.json");
    const s = new AuthorizedKeyStore(path, silentLogger());
    const a = generateEd25519KeyPair("t").public;
    const b = generateEd25519KeyPair("t").public;
    const parent = generateEd25519KeyPair("t").public;
    const ka = await s.addKey({ publicKey: a, role: "reader" });
    await s.addKey({ publicKey: b, role: "reader" });
    s.addStaticKey({ publicKey: parent, role: "controller" });
    assert.equal((await s.listKeys()).length, 3);
    assert.equal(await s.removeKey({ fingerprint: ka.fingerprint }), true);
    assert.equal(await s.removeKey({ publicKey: b }), true);
    assert.equal(await s.removeKey({ publicKey: b }), false);
    const onDisk = JSON.parse(await readFile(path, "utf8"));
    assert.deepEqual(onDisk.keys, []);
    assert.equal(s.lookup("ssh-ed25519", blobOf(parent))?.role, "controller");
  } finally {
    await t.cleanup();
  }
});

test("a corrupt keys file is StateCorrupt, not an empty store", async () => {
  const t = await tempDir();
  try {
    const path = join(t.path, "k.json");
    await writeFile(path, "{not json");
    const s = new AuthorizedKeyStore(path, silentLogger());
    assert.equal(await codeOf(s.load()), "StateCorrupt");
  } finally {
    await t.cleanup();
  }
});
