// hsctl's auto-started level 0: when it cannot start, hsctl reports the
// daemon's own error (its code and hint, the log named, exit 1) and never a
// socket it did not try; with the system hsd's 2222 taken and no ssh.port set,
// it listens on a free port and a nest goes through.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import { e2eTree, hsctl, hsdProcessesUnder, jsonLines } from "../helpers/hsctl.js";
import { holdPort } from "../helpers/hold-port.js";

const { root, l0, env } = await e2eTree("hsd-l0-start-");

async function freshRoot(name: string, yaml: string): Promise<Record<string, string>> {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(join(dir, "hsd.yaml"), yaml, { mode: 0o600 });
  return { HSD_ROOT: dir, HSD_SOCKET: "" };
}

/** stderr lines after hsctl's "starting a level-0 hsd" line. */
function failureLines(stderr: string): string[] {
  return stderr.trimEnd().split("\n").filter((l) => !l.includes("starting a level-0 hsd"));
}

test("a level 0 that cannot bind its SSH port: hsctl prints the daemon's AddressInUse and its log, exit 1", async () => {
  const held = await holdPort();
  try {
    const e = await freshRoot("busy", `ssh:\n  port: ${held.port}\nlog:\n  level: warn\n`);
    const r = await hsctl(["nest", "--depth", "1"], e, 60_000);
    assert.equal(r.code, 1, r.stderr);
    const lines = failureLines(r.stderr);
    assert.match(lines[0] ?? "", /\[AddressInUse\]$/);
    assert.match(lines.at(-1) ?? "", /^ {2}hint: /);
    assert.ok(lines.at(-1)!.includes(join(e.HSD_ROOT!, "hsd.log")), lines.at(-1));
    assert.ok(!r.stderr.includes("/run/hsd/hsd.sock"), "named a socket it did not try");
    assert.deepEqual(await hsdProcessesUnder(e.HSD_ROOT!), []);
  } finally {
    await held.release();
  }
});

test("a level 0 with a broken hsd.yaml: hsctl prints every issue with the daemon's ConfigInvalid, exit 1", async () => {
  const e = await freshRoot("badcfg", "timeouts:\n  connect: soon\nssh:\n  port: twenty-two\nnest:\n  max_dept: 3\n");
  const r = await hsctl(["nest", "--depth", "1"], e, 60_000);
  assert.equal(r.code, 1, r.stderr);
  const lines = failureLines(r.stderr);
  assert.match(lines[0] ?? "", /\[ConfigInvalid\]$/);
  const issueLines = lines.filter((l) => /hsd\.yaml:\d+: /.test(l));
  assert.deepEqual(issueLines.map((l) => /hsd\.yaml:(\d+): ([a-z_.]+):/.exec(l)!.slice(1, 3)), [
    ["2", "timeouts.connect"], ["4", "ssh.port"], ["6", "nest.max_dept"],
  ]);
  assert.ok(lines.at(-1)!.includes(join(e.HSD_ROOT!, "hsd.log")));
});

test("with 2222 taken and no ssh.port in hsd.yaml, level 0 listens on a free port and nest --depth 1 completes", async () => {
  const held = await holdPort(2222);
  try {
    await mkdir(l0, { recursive: true, mode: 0o700 });
    await writeFile(join(l0, "hsd.yaml"), "log:\n  level: warn\n", { mode: 0o600 });
    const r = await hsctl(["nest", "--depth", "1", "--json"], env, 120_000);
    assert.equal(r.code, 0, r.stderr);
    const ready = JSON.parse(await readFile(join(l0, "run/ready.json"), "utf8")) as { sshPort: number };
    assert.ok(ready.sshPort > 0 && ready.sshPort !== 2222, String(ready.sshPort));
    // The child was told the port level 0 actually bound, and status reports it.
    const l1 = parse(await readFile(join(l0, "state/levels/l1/hsd.yaml"), "utf8")) as { parent: { port: number } };
    assert.equal(l1.parent.port, ready.sshPort);
    const st = await hsctl(["status", "--json"], env, 30_000);
    assert.equal(st.code, 0, st.stderr);
    assert.match(JSON.parse(st.stdout).address as string, new RegExp(`:${ready.sshPort}$`));
    assert.ok(jsonLines(r.stdout).some((ev) => ev.level === "l0/l1" && ev.phase === "nest" && ev.kind === "finished"));
  } finally {
    await held.release();
  }
});
