// End to end: `hsctl nest --depth 2 --width 3` builds 3 children under level
// 0 and 3 under each of them (12 levels), bounded by nest.max_parallel; status
// shows the whole tree, a sync reaches every level, and destroy leaves no hsd
// process and no level directory. Heavy on a small machine (12 hsd processes).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, readdir, access } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hsctl, jsonLines, levelRoots, hsdProcessesUnder } from "../helpers/hsctl.js";

const root = await mkdtemp(join(tmpdir(), "hsd-width-"));
const env = { HSD_ROOT: join(root, "l0") };

after(async () => {
  await hsctl(["destroy", "--json"], env, 120_000).catch(() => undefined);
  for (const pid of await hsdProcessesUnder(root)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  await rm(root, { recursive: true, force: true });
});

type Status = { name: string; state: string; sync: string; children: Status[] };

test("--depth 2 --width 3 builds 12 levels; status shows the tree; sync reaches all; destroy leaves nothing", async () => {
  const t0 = Date.now();
  const r = await hsctl(["nest", "--depth", "2", "--width", "3", "--json"], env, 290_000);
  console.log(`width 2x3 build: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-3000)}`);
  const expected = ["l1a", "l1b", "l1c"].flatMap((a) => [`l0/${a}`, ...["l2a", "l2b", "l2c"].map((b) => `l0/${a}/${b}`)]).sort();
  const ready = jsonLines(r.stdout).filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(ready, expected);
  assert.equal((await levelRoots(env.HSD_ROOT)).length, 13);

  const s = await hsctl(["status", "--json"], env, 60_000);
  assert.equal(s.code, 0, s.stderr);
  const paths: string[] = [];
  const walk = (n: Status, p: string) => { for (const c of n.children) { paths.push(`${p}/${c.name}`); assert.equal(c.state, "ready", c.name); assert.equal(c.sync, "in sync", c.name); walk(c, `${p}/${c.name}`); } };
  walk(JSON.parse(s.stdout) as Status, "l0");
  assert.deepEqual(paths.sort(), expected);
  const text = await hsctl(["status"], env, 60_000);
  assert.match(text.stdout, /├─ l1a/);
  assert.match(text.stdout, /└─ l1c/);

  const sync = await hsctl(["sync", "--json"], env, 120_000);
  assert.equal(sync.code, 0, sync.stderr);
  const synced = jsonLines(sync.stdout).filter((e) => e.phase === "sync" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(synced, ["l0", ...expected].sort());

  const d = await hsctl(["destroy", "--json"], env, 120_000);
  assert.equal(d.code, 0, d.stderr);
  assert.deepEqual(await hsdProcessesUnder(root), []);
  assert.deepEqual(await readdir(join(env.HSD_ROOT, "state", "levels")).catch(() => []), []);
  await assert.rejects(access(join(env.HSD_ROOT, "run", "hsd.sock")));
});
