// A level's config/site.yaml and config/secrets.yaml in homestak's schema:
// what a parent scopes for its child, what the child writes (0600, atomic,
// its own token and key kept), and the typed stop on an encrypted-only file.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, readFile, writeFile, stat, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { parseConfig } from "../../src/config/load-config.js";
import { homestakLayout } from "../../src/homestak/layout.js";
import { SiteConfigFiles, decodeLevelFiles, encodeLevelFiles, scopeForChild } from "../../src/homestak/site-config.js";
import { HsError } from "../../src/domain/errors.js";

const PARENT = {
  api_tokens: { l1: "root@pam!homestak=11111111-aaaa" },
  passwords: { vm_root: "$6$hash" },
  ssh_keys: { operator: "ssh-ed25519 AAAAop op", l0: "ssh-ed25519 AAAAl0 hsd@l0", self: "ssh-ed25519 AAAAl1 hsd@l1" },
  auth: { signing_key: "sk" },
  extra: { not: "passed" },
};

test("scoping passes only pass_down keys, never api_tokens, and renames the parent's own key to its name", () => {
  const out = scopeForChild(PARENT, ["passwords", "ssh_keys", "auth", "api_tokens"], { name: "l1", publicKey: "ssh-ed25519 AAAAl1 hsd@l1" });
  assert.deepEqual(out, {
    passwords: { vm_root: "$6$hash" },
    ssh_keys: { operator: "ssh-ed25519 AAAAop op", l0: "ssh-ed25519 AAAAl0 hsd@l0", l1: "ssh-ed25519 AAAAl1 hsd@l1" },
    auth: { signing_key: "sk" },
  });
  assert.deepEqual(scopeForChild(PARENT, ["passwords.vm_root"], { name: "l1", publicKey: "k" }), { passwords: { vm_root: "$6$hash" } });
});

test("the PutSecrets payload round-trips site.yaml byte for byte and refuses foreign keys", () => {
  const site = "# keep me\ndefaults:\n  domain: x   # trailing comment\n";
  assert.deepEqual(decodeLevelFiles(encodeLevelFiles({ site, secrets: { a: { b: "c" } } }), "t"), { site, secrets: { a: { b: "c" } } });
  assert.deepEqual(decodeLevelFiles(encodeLevelFiles({ secrets: {} }), "t"), { secrets: {} });
  assert.throws(() => decodeLevelFiles("secrets: {}\nextra: 1\n", "t"), (e: unknown) => e instanceof HsError && e.code === "InvalidArgument");
});

async function child(dir: string) {
  const config = parseConfig("parent: { host: 127.0.0.1, host_key_fingerprint: \"SHA256:abc\" }\n", "t", { root: dir });
  const layout = homestakLayout(config);
  await mkdir(layout.configDir, { recursive: true });
  return { layout, files: new SiteConfigFiles({ layout, self: () => ({ name: "l2", publicKey: "ssh-ed25519 AAAAl2 hsd@l2" }) }) };
}

test("a child writes site.yaml as given and secrets.yaml 0600 with its own key as self; its own api_tokens survive a re-delivery", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-siteconfig-"));
  try {
    const { layout, files } = await child(dir);
    assert.equal(layout.configDir, join(dir, "homestak", "config"));
    const scoped = scopeForChild(PARENT, ["passwords", "ssh_keys", "auth"], { name: "l1", publicKey: "ssh-ed25519 AAAAl1 hsd@l1" });
    assert.deepEqual(await files.put({ site: "defaults: {}\n", secrets: scoped }), ["auth", "passwords", "ssh_keys"]);
    assert.equal(await readFile(layout.siteYaml, "utf8"), "defaults: {}\n");
    assert.equal((await stat(layout.secretsYaml)).mode & 0o777, 0o600);
    const a = parse(await readFile(layout.secretsYaml, "utf8"));
    assert.equal(a.ssh_keys.self, "ssh-ed25519 AAAAl2 hsd@l2");
    assert.equal(a.ssh_keys.l1, "ssh-ed25519 AAAAl1 hsd@l1");
    // The level's own configure adds its token; the next delivery keeps it and accepts no other.
    await writeFile(layout.secretsYaml, `${await readFile(layout.secretsYaml, "utf8")}api_tokens:\n  l2: own\n`, { mode: 0o600 });
    await files.put({ secrets: { ...scoped, api_tokens: { l1: "foreign" } } });
    assert.deepEqual(parse(await readFile(layout.secretsYaml, "utf8")).api_tokens, { l2: "own" });
  } finally { await rm(dir, { recursive: true, force: true }); }
});

test("putOwnApiToken leaves api_tokens holding only this level's entry, keeps the other keys, 0600; putConfigFile writes under config/", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-siteconfig-"));
  try {
    const { layout, files } = await child(dir);
    await writeFile(layout.secretsYaml, "passwords: { vm_root: h }\napi_tokens: { l1: stray }\n", { mode: 0o644 });
    await files.putOwnApiToken("l2", "root@pam!hsd=uuid-2");
    assert.equal((await stat(layout.secretsYaml)).mode & 0o777, 0o600);
    assert.deepEqual(parse(await readFile(layout.secretsYaml, "utf8")), { passwords: { vm_root: "h" }, api_tokens: { l2: "root@pam!hsd=uuid-2" } });
    await files.putConfigFile("nodes/l2.yaml", "node: l2\n");
    assert.equal(await readFile(join(layout.configDir, "nodes", "l2.yaml"), "utf8"), "node: l2\n");
    assert.equal((await stat(join(layout.configDir, "nodes", "l2.yaml"))).mode & 0o777, 0o644);
  } finally { await rm(dir, { recursive: true, force: true }); }
});

test("only secrets.yaml.enc and no plaintext: SecretsEncrypted, naming no value", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-siteconfig-"));
  try {
    const { layout, files } = await child(dir);
    assert.deepEqual(await files.readSecrets(), {});
    await writeFile(layout.secretsEnc, "passwords:\n  vm_root: ENC[AES256_GCM,data:zzz]\nsops: {}\n");
    await assert.rejects(files.readSecrets(), (e: unknown) => e instanceof HsError && e.code === "SecretsEncrypted" && !e.message.includes("zzz"));
  } finally { await rm(dir, { recursive: true, force: true }); }
});
