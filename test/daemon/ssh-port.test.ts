// A level under a user's root with ssh.port unset listens on a free port, the
// same one after a restart (live children are pinned to it), and a free other
// one when that port is taken meanwhile. Real hsd processes.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startHsd, type HsdProcess } from "./daemon-process.js";
import { holdPort } from "../helpers/hold-port.js";

const root = await mkdtemp(join(tmpdir(), "hsd-ssh-port-"));
const running: HsdProcess[] = [];
after(async () => {
  for (const h of running) await h.kill();
  await rm(root, { recursive: true, force: true });
});

async function runOnce(): Promise<number> {
  const h = startHsd(["run", "--root", root]);
  running.push(h);
  const ready = await h.ready;
  h.proc.kill("SIGTERM");
  assert.equal((await h.exited).code, 0);
  return ready.sshPort;
}

const remembered = async () => Number((await readFile(join(root, "state/ssh-port"), "utf8")).trim());

test("unset ssh.port under --root: a free port, kept across a restart, moved only when taken", async () => {
  await writeFile(join(root, "hsd.yaml"), "ssh:\n  host: 127.0.0.1\nlog:\n  level: warn\n", { mode: 0o600 });
  const first = await runOnce();
  assert.ok(first > 0 && first !== 2222, String(first));
  assert.equal(await remembered(), first);
  assert.equal(await runOnce(), first);

  const held = await holdPort(first);
  try {
    const moved = await runOnce();
    assert.notEqual(moved, first);
    assert.equal(await remembered(), moved);
  } finally {
    await held.release();
  }
});

test("an explicit ssh.port: 0 is a new free port each start and nothing is remembered", async () => {
  const dir = await mkdtemp(join(root, "zero-"));
  await writeFile(join(dir, "hsd.yaml"), "ssh:\n  host: 127.0.0.1\n  port: 0\nlog:\n  level: warn\n", { mode: 0o600 });
  const h = startHsd(["run", "--root", dir]);
  running.push(h);
  assert.ok((await h.ready).sshPort > 0);
  await assert.rejects(readFile(join(dir, "state/ssh-port"), "utf8"), { code: "ENOENT" });
});
