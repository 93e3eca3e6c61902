// configure.steps and homestak: in hsd.yaml are validated at load: every bad
// step fails with ConfigInvalid naming file:line and the key, and a good one
// loads to the typed, frozen step the runner uses.

import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load-config.js";
import { HsError } from "../../src/domain/errors.js";

const load = (text: string) => parseConfig(text, "/etc/homestak/hsd.yaml", { root: "/srv/level" });

function rejects(text: string, key: string, line: number): void {
  try {
    load(text);
  } catch (err) {
    assert.ok(err instanceof HsError);
    assert.equal(err.code, "ConfigInvalid");
    assert.equal(err.details.file, "/etc/homestak/hsd.yaml");
    assert.equal(err.details.key, key);
    assert.equal(err.details.line, line);
    return;
  }
  assert.fail(`loaded: ${text}`);
}

const step = (extra: string) => `configure:\n  steps:\n    - name: ok\n      run: [true]\n    - name: bad\n${extra}`;

test("a step whose cwd names an unknown repo fails at load with file:line and key", () => {
  rejects(step("      run: [make]\n      cwd: ansibel\n"), "configure.steps.1.cwd", 7);
});

test("an empty run, a missing run and an empty program fail at load", () => {
  rejects(step("      run: []\n"), "configure.steps.1.run", 6);
  rejects(step("      cwd: ansible\n"), "configure.steps.1.run", 5);
  rejects(step("      run: [\"\", x]\n"), "configure.steps.1.run.0", 6);
});

test("duplicate step names fail at load on the second one", () => {
  rejects("configure:\n  steps:\n    - name: a\n      run: [true]\n    - name: a\n      run: [false]\n", "configure.steps.1.name", 5);
});

test("a step may not take the name of hsd's own PVE install step, whose journal record it would share", () => {
  rejects(step("      run: [true]\n").replace("name: bad", "name: pve-install"), "configure.steps.1.name", 5);
});

test("a bad when fails at load: unknown provider, min above max, depth 0, unknown key", () => {
  rejects(step("      run: [true]\n      when: { provider: vmware }\n"), "configure.steps.1.when.provider", 7);
  rejects(step("      run: [true]\n      when:\n        min_depth: 3\n        max_depth: 2\n"), "configure.steps.1.when.min_depth", 8);
  rejects(step("      run: [true]\n      when: { min_depth: 0 }\n"), "configure.steps.1.when.min_depth", 7);
  rejects(step("      run: [true]\n      when: { depth: 2 }\n"), "configure.steps.1.when.depth", 7);
});

test("secrets cannot ride in a step's env, a cwd cannot leave the homestak root, a budget must fit the phase", () => {
  rejects(step("      run: [true]\n      env:\n        PVE_TOKEN: x\n"), "configure.steps.1.env.PVE_TOKEN", 8);
  rejects(step("      run: [true]\n      env: { HOMESTAK_ROOT: /tmp }\n"), "configure.steps.1.env.HOMESTAK_ROOT", 7);
  rejects(step("      run: [true]\n      cwd: ../etc\n"), "configure.steps.1.cwd", 7);
  rejects(step("      run: [true]\n      budget: 30m\n"), "configure.steps.1.budget", 7);
  rejects(step("      run: [true]\n      user: Root!\n"), "configure.steps.1.user", 7);
});

test("a layout that puts two repos in one tree, or outside the root, fails at load", () => {
  rejects("homestak:\n  layout:\n    tofu: iac/ansible\n", "homestak.layout.tofu", 3);
  rejects("homestak:\n  layout:\n    tofu: /opt/tofu\n", "homestak.layout.tofu", 3);
});

test("level names are DNS labels (the homestak node name)", () => {
  rejects("level:\n  name: L0_top\n", "level.name", 2);
  rejects("level:\n  name: -l0\n", "level.name", 2);
  assert.equal(load("level:\n  name: root-pve\n").level.name, "root-pve");
});

test("good steps load typed and frozen; the layout maps site-config to config/ and defaults homestak.root under the level root", () => {
  const c = load(`configure:
  steps:
    - name: pve-config
      run: [./run.sh, scenario, run, pve-config, --local]
      cwd: iac-driver
      env: { ANSIBLE_NOCOLOR: "1" }
      budget: 5m
      when: { provider: pve, min_depth: 1, max_depth: 4 }
    - name: shell
      run: [sh, -c, "echo hi"]
      cwd: iac/ansible
`);
  assert.deepEqual(c.configure.steps.map((s) => [s.name, s.cwd, s.budgetMs]), [["pve-config", "iac-driver", 300_000], ["shell", "iac/ansible", 600_000]]);
  assert.deepEqual(c.configure.steps[0]!.when, { provider: "pve", minDepth: 1, maxDepth: 4 });
  assert.ok(Object.isFrozen(c.configure.steps) && Object.isFrozen(c.configure.steps[0]!.run));
  assert.equal(c.homestak.root, "/srv/level/homestak");
  assert.equal(c.homestak.layout["site-config"], "config");
  assert.equal(c.homestak.layout["iac-driver"], "iac/iac-driver");
  assert.equal(parseConfig("", "x", { root: "/var/lib/hsd", homestakHome: "/home/homestak" }).homestak.root, "/home/homestak");
});

test("repos named like Object.prototype members load and lay out under their own names (found by the config fuzzer)", () => {
  const cfg = load("repos:\n  constructor: /tmp/a\n  toString: /tmp/b\n");
  assert.ok(Object.isFrozen(cfg));
  assert.equal(Object.hasOwn(cfg.homestak.layout, "constructor"), false);
});

test("homestak.user: a named user must exist and hsd must be able to hand files to it; none by default under --root", () => {
  const users: Record<string, { uid: number }> = { homestak: { uid: 990 }, alice: { uid: 1000 } };
  const withUsers = (text: string, uid: number, extra: Record<string, unknown> = {}) =>
    parseConfig(text, "/etc/homestak/hsd.yaml", { root: "/srv/level", lookupUser: (n) => users[n], uid, ...extra });
  assert.equal(withUsers("", 0).homestak.user, null);
  assert.equal(withUsers("homestak: { user: homestak }\n", 0).homestak.user, "homestak");
  // An installed system's default is the homestak user (the daemon passes it only when that user exists).
  assert.equal(withUsers("", 0, { homestakUser: "homestak" }).homestak.user, "homestak");
  const bad = (text: string, uid: number) => {
    try { withUsers(text, uid); } catch (err) {
      assert.ok(err instanceof HsError);
      assert.equal(err.code, "ConfigInvalid");
      assert.equal(err.details.key, "homestak.user");
      assert.equal(err.details.line, 1);
      return;
    }
    assert.fail(`loaded: ${text}`);
  };
  bad("homestak: { user: nosuchuser }\n", 0);
  bad("homestak: { user: \"Bad User\" }\n", 0);
  // Not root: only its own user is possible.
  bad("homestak: { user: homestak }\n", 1000);
  assert.equal(withUsers("homestak: { user: alice }\n", 1000).homestak.user, "alice");
});
