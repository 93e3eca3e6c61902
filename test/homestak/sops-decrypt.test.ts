// Level 0's secrets.yaml.enc (sops + age) is decrypted in memory with the
// operator's age identity and the real `age` CLI: values, types, lists and an
// unencrypted key come back; a tampered value, a wrong MAC, a wrong identity
// or none all stop with SecretsEncrypted naming the file, never a value.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, readFile, writeFile, mkdir, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ageKeygen, sopsYaml } from "../helpers/sops-fixture.js";
import { parseConfig } from "../../src/config/load-config.js";
import { homestakLayout } from "../../src/homestak/layout.js";
import { SiteConfigFiles } from "../../src/homestak/site-config.js";
import { ageIdentityFiles } from "../../src/homestak/sops-decrypt.js";
import { HsError } from "../../src/domain/errors.js";

async function fixture() {
  const dir = await mkdtemp(join(tmpdir(), "hsd-sops-"));
  const keyFile = join(dir, "keys.txt");
  const recipient = ageKeygen(keyFile);
  const config = parseConfig("", "t", { root: dir });
  const cfgDir = join(dir, "site-config");
  await mkdir(cfgDir);
  const layout = homestakLayout(config, { "site-config": cfgDir });
  await writeFile(layout.secretsEnc, sopsYaml({
    api_tokens: { l0: "root@pam!homestak=CANARY-token" }, passwords: { vm_root: "CANARY-pw" },
    dns: ["10.0.0.1", "10.0.0.2"], retries: 3, debug: true, port_unencrypted: 22,
  }, recipient));
  const files = (ids: string[]) => new SiteConfigFiles({ layout, self: () => ({ name: "l0", publicKey: "k" }), ageIdentityFiles: ids });
  return { dir, keyFile, layout, files, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

const encrypted = (e: unknown) => e instanceof HsError && e.code === "SecretsEncrypted" && !e.message.includes("CANARY");

test("only secrets.yaml.enc: decrypted in memory with the operator's age identity, types and lists intact, nothing written", async () => {
  const f = await fixture();
  try {
    const before = (await readdir(f.layout.configDir)).sort();
    assert.deepEqual(await f.files([f.keyFile]).readSecrets(), {
      api_tokens: { l0: "root@pam!homestak=CANARY-token" }, passwords: { vm_root: "CANARY-pw" },
      dns: ["10.0.0.1", "10.0.0.2"], retries: 3, debug: true, port_unencrypted: 22,
    });
    assert.deepEqual((await readdir(f.layout.configDir)).sort(), before, "a plaintext file was written");
  } finally { await f.cleanup(); }
});

test("no identity, a wrong identity, a tampered value or a changed MAC: SecretsEncrypted naming the file, no value", async () => {
  const f = await fixture();
  try {
    await assert.rejects(f.files([join(f.dir, "absent.txt")]).readSecrets(), encrypted);
    const other = join(f.dir, "other.txt");
    execFileSync("age-keygen", ["-o", other], { stdio: "ignore" });
    await assert.rejects(f.files([other]).readSecrets(), encrypted);
    const text = await readFile(f.layout.secretsEnc, "utf8");
    // A value moved to another key no longer authenticates (its key path is its additional data).
    const swapped = text.replace(/(vm_root: )(ENC\[[^\]]+\])/, `$1${/l0: (ENC\[[^\]]+\])/.exec(text)![1]}`);
    await writeFile(f.layout.secretsEnc, swapped);
    await assert.rejects(f.files([f.keyFile]).readSecrets(), encrypted);
    // An unencrypted value changed after encryption fails the MAC.
    await writeFile(f.layout.secretsEnc, text.replace("port_unencrypted: 22", "port_unencrypted: 23"));
    await assert.rejects(f.files([f.keyFile]).readSecrets(), encrypted);
  } finally { await f.cleanup(); }
});

test("the identity is looked up as sops does: SOPS_AGE_KEY_FILE, else XDG_CONFIG_HOME or ~/.config sops/age/keys.txt", () => {
  assert.deepEqual(ageIdentityFiles({ SOPS_AGE_KEY_FILE: "/k", HOME: "/h" }), ["/k"]);
  assert.deepEqual(ageIdentityFiles({ XDG_CONFIG_HOME: "/x", HOME: "/h" }), ["/x/sops/age/keys.txt"]);
  assert.deepEqual(ageIdentityFiles({ HOME: "/h" }), ["/h/.config/sops/age/keys.txt"]);
});
