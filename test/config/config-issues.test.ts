// hsd.yaml with several mistakes: one run reports each (file:line, key, in
// file order), YAML syntax errors carry line and column, and a real hsd
// still exits 78 with all of them on stderr and on its ready pipe.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load-config.js";
import { PROVIDER_CONFIGS } from "../../src/providers/registry.js";
import { configIssuesOf, type ConfigIssue } from "../../src/config/config-issues.js";
import { ConfigError } from "../../src/domain/errors.js";
import { startHsd } from "../daemon/daemon-process.js";

function issuesOf(text: string): ConfigIssue[] {
  try {
    parseConfig(text, "hsd.yaml", { root: "/srv/level", providers: PROVIDER_CONFIGS });
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.code, "ConfigInvalid");
    return configIssuesOf(err);
  }
  assert.fail("the config was accepted");
}

const THREE_MISTAKES = [
  "level:",              // 1
  "  name: l0",          // 2
  "timeouts:",           // 3
  "  connect: soon",     // 4: bad duration
  "ssh:",                // 5
  "  port: twenty-two",  // 6: not a number
  "  max_upload_packs: 4",
  "nest:",               // 8
  "  max_dept: 3",       // 9: unknown key
  "log:",                // 10
  "  level: loud",       // 11: bad value
  "",
].join("\n");

test("every error in the file is reported in one run, in file order, each with its line and key", () => {
  const issues = issuesOf(THREE_MISTAKES);
  assert.deepEqual(issues.map((i) => [i.line, i.key]), [
    [4, "timeouts.connect"], [6, "ssh.port"], [9, "nest.max_dept"], [11, "log.level"],
  ]);
  assert.ok(issues.every((i) => i.file === "hsd.yaml"));
});

test("issues found out of file order are still reported in file order", () => {
  // The loader reads level before ssh and pve checks last; the file puts them the other way round.
  const issues = issuesOf("pve:\n  cores: many\nssh:\n  port: -1\nlevel:\n  name: Not_A_Name\nbogus: 1\n");
  assert.deepEqual(issues.map((i) => [i.line, i.key]), [[2, "pve.cores"], [4, "ssh.port"], [6, "level.name"], [7, "bogus"]]);
});

test("a single error keeps the one-issue shape", () => {
  const issues = issuesOf("nest:\n  max_depth: lots\n");
  assert.deepEqual(issues.map((i) => [i.line, i.key]), [[2, "nest.max_depth"]]);
});

test("YAML syntax errors carry line and column, all of them", () => {
  const issues = issuesOf("level:\n  name: l0\nssh:\n  port: [1, 2\n  host: x\n");
  assert.ok(issues.length >= 1);
  for (const i of issues) {
    assert.equal(i.key, "");
    assert.equal(typeof i.line, "number");
    assert.equal(typeof i.column, "number");
  }
  const dup = issuesOf("log:\n  level: info\nlog:\n  level: warn\n");
  assert.deepEqual(dup.map((i) => [i.line, i.column]), [[3, 1]]);
});

test("a valid file still loads; an unset ssh.port on a user root is a free port kept across restarts", () => {
  const sys = parseConfig("log:\n  level: warn\n", "hsd.yaml", { root: "/srv/level" });
  assert.equal(sys.ssh.port, 2222);
  assert.equal(sys.ssh.reuseLastPort, false);
  const user = parseConfig("log:\n  level: warn\n", "hsd.yaml", { root: "/srv/level", freeSshPort: true });
  assert.equal(user.ssh.port, 0);
  assert.equal(user.ssh.reuseLastPort, true);
  const pinned = parseConfig("ssh:\n  port: 2222\n", "hsd.yaml", { root: "/srv/level", freeSshPort: true });
  assert.equal(pinned.ssh.port, 2222);
  assert.equal(pinned.ssh.reuseLastPort, false);
  const zero = parseConfig("ssh:\n  port: 0\n", "hsd.yaml", { root: "/srv/level", freeSshPort: true });
  assert.equal(zero.ssh.reuseLastPort, false);
});

test("hsd exits 78 and reports every issue on stderr and, structured, on its ready pipe", async () => {
  const root = await mkdtemp(join(tmpdir(), "hsd-cfg-issues-"));
  try {
    await writeFile(join(root, "hsd.yaml"), THREE_MISTAKES, { mode: 0o600 });
    const h = startHsd(["run", "--root", root]);
    const failure = await h.ready.then(() => assert.fail("hsd became ready"), (err: { failure?: { code: string; details?: { issues?: ConfigIssue[] } } }) => err.failure);
    const x = await h.exited;
    assert.equal(x.code, 78);
    assert.equal(failure?.code, "ConfigInvalid");
    assert.deepEqual(failure?.details?.issues?.map((i) => [i.line, i.key]), [
      [4, "timeouts.connect"], [6, "ssh.port"], [9, "nest.max_dept"], [11, "log.level"],
    ]);
    for (const key of ["timeouts.connect", "ssh.port", "nest.max_dept", "log.level"]) assert.ok(x.stderr.includes(key), key);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
