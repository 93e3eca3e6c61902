// Ctrl-C at hsctl while l3 runs a long configure step: hsctl exits 130 and
// the step's whole process group (the step and a background child of its
// own) is gone, three hops down. Real processes throughout.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl } from "../helpers/hsctl.js";

const { l0, env } = await e2eTree("hsd-step-cancel-");
await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), `level: { name: l0 }
ssh: { host: 127.0.0.1, port: 0 }
configure:
  steps:
    - name: long
      run: [sh, -c, 'sleep 600 & echo "pgid $$"; wait']
      when: { min_depth: 3 }
`);

/** Waits (bounded) until no process is left in group `pgid`. */
async function groupGone(pgid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    try { process.kill(-pgid, 0); } catch { return true; }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("SIGINT while l3 runs a long step kills the step's process group; hsctl exits 130", async () => {
  let pgid = 0;
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 180_000, (line, kill) => {
    if (pgid || !line.startsWith("{")) return;
    const ev = JSON.parse(line);
    const m = ev.level === "l0/l1/l2/l3" && ev.phase === "configure" ? /long\| pgid (\d+)/.exec(ev.message ?? "") : null;
    if (m) {
      pgid = Number(m[1]);
      // The group is alive while the step runs: the check below is about the kill.
      process.kill(-pgid, 0);
      kill(); // SIGINT, as Ctrl-C would
    }
  });
  assert.ok(pgid > 0, `never saw l3's step start:\n${r.stdout.slice(-1500)}`);
  assert.equal(r.code, 130, r.stderr);
  assert.ok(await groupGone(pgid, 20_000), `process group ${pgid} of l3's step is still alive`);
});
