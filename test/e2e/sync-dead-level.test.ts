// End to end: `hsctl sync` with level 2 of a depth-3 tree SIGKILLed. The sync
// names the dead level in a failed event and on stderr and exits 1, but the
// rest of the wave completes (level 1 gets the commit). Status then shows
// level 2 unreachable, judged on what it last reported: one commit behind.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hsctl, jsonLines, hsdProcessesUnder } from "../helpers/hsctl.js";
import { addCommit } from "../../src/demo/demo-repos.js";

const root = await mkdtemp(join(tmpdir(), "hsd-syncdead-"));
const env = { HSD_ROOT: join(root, "l0") };
const REPO = "tofu";

after(async () => {
  await hsctl(["destroy", "--json"], env, 60_000).catch(() => undefined);
  for (const pid of await hsdProcessesUnder(root)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  await rm(root, { recursive: true, force: true });
});

type Status = { name: string; state: string; sync: string; repos: { name: string; servedCommit: string; syncState?: string; behind?: number }[]; children: Status[] };

/** Resolves when `pid` no longer exists (bounded). */
async function gone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { process.kill(pid, 0); } catch { return true; }
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

test("sync with level 2 killed reports it, completes level 1, exits 1", async () => {
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 180_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-3000)}`);

  const ready = JSON.parse(await readFile(join(env.HSD_ROOT, "state/levels/l1/state/levels/l2/run/ready.json"), "utf8")) as { pid: number };
  process.kill(ready.pid, "SIGKILL");
  assert.ok(await gone(ready.pid, 10_000), "l2 did not die");

  const commit = await addCommit(join(env.HSD_ROOT, "demo", REPO), { "modules/vm/dead_level_test.tf": "# a change while l2 is down\n" }, "while l2 is down");
  const s = await hsctl(["sync", "--json"], env, 90_000);
  assert.equal(s.code, 1, s.stderr);
  const ev = jsonLines(s.stdout).filter((e) => e.phase === "sync");
  const failed = ev.filter((e) => e.kind === "failed");
  assert.deepEqual(failed.map((e) => e.level), ["l0/l1/l2"]);
  assert.equal(failed[0]!.failure.code, "PeerGone");
  assert.match(s.stderr, /l0\/l1\/l2/);
  for (const lvl of ["l0", "l0/l1"]) {
    const fin = ev.find((e) => e.level === lvl && e.kind === "finished");
    assert.ok(fin, `${lvl} finished`);
    assert.equal(fin.repos.find((x: { name: string }) => x.name === REPO).servedCommit, commit, lvl);
  }
  assert.equal(ev.filter((e) => e.level === "l0/l1/l2/l3").length, 0, "nothing reached the stale subtree");

  const st = await hsctl(["status", "--json"], env, 60_000);
  assert.equal(st.code, 0, st.stderr);
  const l1 = (JSON.parse(st.stdout) as Status).children[0]!;
  assert.equal(l1.sync, "in sync");
  const l2 = l1.children[0]!;
  assert.equal(l2.state, "unreachable");
  const last = l2.repos.find((x) => x.name === REPO)!;
  assert.equal(last.syncState, "behind");
  assert.equal(last.behind, 1);
  assert.match(l2.sync, /behind \(1 commit\)/);
});
