// The config writer is the loader's inverse: what it writes, parseConfig reads
// back as the same config. Also: a child's inherited keys are a valid config.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { parseConfig } from "../../src/config/load-config.js";
import { configDocument, configYaml, inheritedConfig } from "../../src/config/write-config.js";
import type { HsdConfig } from "../../src/config/config.js";
import { PROVIDER_CONFIGS } from "../../src/providers/registry.js";
import { configIssuesOf } from "../../src/config/config-issues.js";
import { parsePublicKeyLine } from "../../src/ssh/key-fingerprint.js";
import ssh2 from "ssh2";

const opts = { root: "/srv/level", providers: PROVIDER_CONFIGS };
const roundTrip = (c: HsdConfig) => parseConfig(configYaml(configDocument(c), "round trip"), "round-trip.yaml", opts);
const withoutSource = (c: HsdConfig) => ({ ...c, source: "" });

test("the defaults survive write then load unchanged", () => {
  const c = parseConfig("", "<defaults>", opts);
  assert.deepEqual(withoutSource(roundTrip(c)), withoutSource(c));
});

test("the example config (every key) survives write then load unchanged", async () => {
  const text = await readFile(new URL("../../daemon/hsd.example.yaml", import.meta.url), "utf8");
  const c = parseConfig(text, "hsd.example.yaml", opts);
  assert.deepEqual(withoutSource(roundTrip(c)), withoutSource(c));
});

test("a child level's config with parent, pve and odd values survives write then load", () => {
  const c = parseConfig([
    "level: { name: l3, depth: 3 }",
    "ssh: { host: 10.231.0.2, port: 0, advertise_host: 10.231.0.2, upload_pack_timeout: 90s, auth_failure_delay: 1500ms }",
    "parent: { host: 10.231.0.1, port: 40001, host_key_fingerprint: 'SHA256:abc+/=', public_key: 'ssh-ed25519 AAAAC3Nz parent' }",
    "repo_names: [bootstrap, ansible]",
    "budgets: { preflight: 1m, nest: 2h }",
    "timeouts: { connect: 2500ms, health_poll: 20ms }",
    "nest: { provider: pve, isolation: netns, max_parallel: 3, subnet_base: '10.77' }",
    "pve: { url: 'https://pve.example:8006', node: n1, fingerprint: '', template: 9100, memory: 4096, bundle: /opt/hsd.tgz }",
    "sync: { mode: watch, debounce: 1s }",
    "secrets: { pass_down: [site] }",
    "log: { level: debug }",
  ].join("\n"), "child.yaml", opts);
  assert.deepEqual(withoutSource(roundTrip(c)), withoutSource(c));
});

test("an unset ssh.port on a user root stays unset (a free port, kept across restarts)", () => {
  const user = { root: "/srv/level", freeSshPort: true, providers: PROVIDER_CONFIGS };
  const c = parseConfig("log: { level: warn }", "user.yaml", user);
  const back = parseConfig(configYaml(configDocument(c), "round trip"), "round-trip.yaml", user);
  assert.equal(back.ssh.reuseLastPort, true);
  assert.deepEqual(withoutSource(back), withoutSource(c));
});

test("the keys a child inherits parse as a config with the parent's budgets and timeouts", () => {
  const parent = parseConfig("budgets: { configure: 7m }\ntimeouts: { command: 45s }\nnest: { max_width: 3 }", "p.yaml", opts);
  const child = parseConfig(configYaml(inheritedConfig(parent), "inherited"), "child.yaml", opts);
  assert.deepEqual(child.budgets, parent.budgets);
  assert.deepEqual(child.timeouts, parent.timeouts);
  assert.equal(child.nest.maxWidth, 3);
  assert.deepEqual(child.secrets, parent.secrets);
});

test("parent.host_key: kept when it is the key the fingerprint pins; another key or no key at all is refused", () => {
  const pair = ssh2.utils.generateKeyPairSync("ed25519");
  const line = pair.public.split(" ").slice(0, 2).join(" ");
  const fp = parsePublicKeyLine(line).fingerprint;
  const other = parsePublicKeyLine(ssh2.utils.generateKeyPairSync("ed25519").public).fingerprint;
  const parent = (fingerprint: string, key: string) =>
    `parent: { host: 10.0.0.1, port: 2222, host_key_fingerprint: '${fingerprint}', public_key: 'ssh-ed25519 AAAAC3Nz parent', host_key: '${key}' }`;
  const c = parseConfig(parent(fp, `${line} a comment`), "child.yaml", opts);
  assert.equal(c.parent!.hostKey, line);
  assert.deepEqual(withoutSource(roundTrip(c)), withoutSource(c));
  assert.equal(parseConfig(parent(fp, "").replace(", host_key: ''", ""), "child.yaml", opts).parent!.hostKey, "");
  for (const [fingerprint, key] of [[other, line], [fp, "ssh-ed25519 notbase64!"], [fp, "not a key"]] as const) {
    let err: unknown;
    try { parseConfig(parent(fingerprint, key), "child.yaml", opts); } catch (e) { err = e; }
    assert.equal((err as { code?: string }).code, "ConfigInvalid");
    assert.deepEqual(configIssuesOf(err as never).map((i) => i.key), ["parent.host_key"]);
  }
});
