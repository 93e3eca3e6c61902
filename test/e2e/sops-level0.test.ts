// Level 0 whose site-config holds only secrets.yaml.enc (sops + age): with
// the operator's age identity it nests, the child's config/secrets.yaml holds
// the scoped plaintext (never level 0's api_tokens), and level 0 never gets a
// plaintext file. Without an identity, the nest stops with SecretsEncrypted.
// Real hsd processes and the real age CLI.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, rm, access } from "node:fs/promises";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";
import { scanForSecret } from "../helpers/secret-scan.js";
import { ageKeygen, sopsYaml } from "../helpers/sops-fixture.js";
import { generateDemoRepos } from "../../src/demo/demo-repos.js";

const { root, l0, env } = await e2eTree("hsd-sops-e2e-");
const keyFile = join(root, "age-keys.txt");
const recipient = ageKeygen(keyFile);
const cfg = join(l0, "demo", "site-config");
const PW = `pw-canary-${process.pid}`;
const TOKEN = `token-canary-${process.pid}`;

await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), "level: { name: l0 }\nssh: { host: 127.0.0.1, port: 0 }\n");
await generateDemoRepos(join(l0, "demo"));
await rm(join(cfg, "secrets.yaml"));
await writeFile(join(cfg, "secrets.yaml.enc"), sopsYaml({
  api_tokens: { l0: TOKEN }, passwords: { vm_root: PW }, ssh_keys: { operator: "ssh-ed25519 AAAAop op" }, auth: { signing_key: "sk-canary" },
}, recipient));

test("without an age identity the nest stops at l1's secrets phase with SecretsEncrypted", async () => {
  const r = await hsctl(["nest", "--depth", "1", "--json"], { ...env, SOPS_AGE_KEY_FILE: join(root, "no-such-key.txt") }, 120_000);
  assert.equal(r.code, 1, r.stderr);
  const failed = jsonLines(r.stdout).find((e) => e.kind === "failed" && e.level === "l0/l1");
  assert.equal(failed?.phase, "secrets");
  assert.equal(failed?.failure?.code, "SecretsEncrypted");
  // Stop this level 0: the next test starts it again with the identity in its environment.
  const d = await hsctl(["destroy"], env, 60_000);
  assert.equal(d.code, 0, d.stderr);
});

test("with the operator's age identity, level 0 decrypts in memory and l1 gets the scoped plaintext", async () => {
  const r = await hsctl(["nest", "--depth", "1", "--json"], { ...env, SOPS_AGE_KEY_FILE: keyFile }, 120_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-1500));
  await assert.rejects(access(join(cfg, "secrets.yaml")), "level 0 wrote a plaintext secrets.yaml");
  const l1 = (await levelRoots(l0))[1]!;
  const sec = parse(await readFile(join(l1, "homestak", "config", "secrets.yaml"), "utf8"));
  assert.deepEqual(Object.keys(sec).sort(), ["auth", "passwords", "ssh_keys"]);
  assert.equal(sec.passwords.vm_root, PW);
  assert.deepEqual(await scanForSecret(root, TOKEN, { allow: () => false }), []);
  assert.deepEqual(await scanForSecret(root, PW, { allow: (p) => p === join(l1, "homestak", "config", "secrets.yaml") }), []);
  assert.ok(!r.stdout.includes(PW) && !r.stderr.includes(PW));
});
