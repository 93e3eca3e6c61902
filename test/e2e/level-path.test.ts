// --level at depth 3, end to end with real hsd processes: status, sync and
// logs of a deep level relayed through its parents' tunnels; `logs -f`
// follows l3's new lines through l1 and l2 and stops cleanly on SIGINT, and
// nothing of l3's secrets appears in the stream; `destroy --level l0/l1/l2`
// removes l2 and l3 and leaves l0 and l1 running.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import { e2eTree, hsctl, HSCTL, hsdProcessesUnder, jsonLines, levelRoots } from "../helpers/hsctl.js";

const { l0, env } = await e2eTree("hsd-level-");

type Status = { name: string; state: string; sync: string; children: Status[] };

/** Every string value of a secrets file: the canaries that must never leave the level. */
function leaves(v: unknown, out: string[] = []): string[] {
  if (typeof v === "string" && v.length >= 8) out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => leaves(x, out));
  else if (v && typeof v === "object") Object.values(v).forEach((x) => leaves(x, out));
  return out;
}

test("nest --depth 3", async () => {
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 240_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
});

test("status and doctor --level: that subtree, compared with its parent", async () => {
  const s = await hsctl(["status", "--level", "l0/l1/l2", "--json"], env, 60_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout) as Status;
  assert.equal(st.name, "l2");
  assert.equal(st.state, "ready");
  assert.equal(st.sync, "in sync");
  assert.deepEqual(st.children.map((c) => c.name), ["l3"]);
  const doc = await hsctl(["doctor", "--level", "l0/l1", "--json"], env, 60_000);
  assert.equal(doc.code, 0, doc.stderr);
  assert.ok((JSON.parse(doc.stdout) as { name: string }[]).length > 0);
  const bad = await hsctl(["status", "--level", "l0/l1/nope"], env, 60_000);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /\[LevelNotFound\]/);
});

test("sync --level l0/l1/l2: only l2 and below sync", async () => {
  const r = await hsctl(["sync", "--level", "l0/l1/l2", "--json"], env, 120_000);
  assert.equal(r.code, 0, r.stderr);
  const finished = jsonLines(r.stdout).filter((e) => e.phase === "sync" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(finished, ["l0/l1/l2", "l0/l1/l2/l3"]);
});

test("logs --level l0/l1/l2/l3: l3's own lines, relayed; --phase filters", async () => {
  const r = await hsctl(["logs", "--level", "l0/l1/l2/l3", "--json"], env, 60_000);
  assert.equal(r.code, 0, r.stderr);
  const lines = jsonLines(r.stdout);
  assert.ok(lines.length > 0);
  assert.ok(lines.every((l) => l.path === "l0/l1/l2/l3" && l.lvl === "l3"), r.stdout.slice(0, 500));
  assert.ok(lines.some((l) => l.msg === "hsd ready"));
  // l3 logged its sync from l2 (phase sync) and much else; l2 logged each phase of building l3.
  const sync = jsonLines((await hsctl(["logs", "--level", "l0/l1/l2/l3", "--phase", "sync", "--json"], env, 60_000)).stdout);
  assert.ok(sync.length > 0 && sync.length < lines.length);
  assert.ok(sync.every((l) => l.phase === "sync"));
  const install = jsonLines((await hsctl(["logs", "--level", "l0/l1/l2", "--phase", "install", "--json"], env, 60_000)).stdout);
  assert.deepEqual(install.map((l) => [l.child, l.msg]), [["l3", "phase started"], ["l3", "phase finished"]]);
  const plain = await hsctl(["logs", "--level", "l0/l1/l2/l3", "--since", "1h"], env, 60_000);
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, /^\d\d:\d\d:\d\d\.\d{3} l0\/l1\/l2\/l3 INFO  hsd ready/m);
});

test("logs -f follows l3 through two hops, stops cleanly on SIGINT; l3's secrets never appear", async () => {
  const l3root = (await levelRoots(l0))[3]!;
  const canaries = leaves(parse(await readFile(join(l3root, "secrets.yaml"), "utf8")));
  assert.ok(canaries.length >= 2, "l3 holds secrets");

  const p = spawn(process.execPath, [HSCTL, "logs", "--level", "l0/l1/l2/l3", "-f", "--json"], {
    env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  p.stderr.setEncoding("utf8").on("data", (c: string) => { err += c; });
  const exited = new Promise<number | null>((r) => p.on("close", (code) => r(code)));
  let triggeredAt = Infinity;
  let onData = () => {};
  p.stdout.setEncoding("utf8").on("data", (c: string) => { out += c; onData(); });
  const until = (pred: () => boolean) => new Promise<void>((resolve, reject) => {
    onData = () => { if (pred()) resolve(); };
    onData();
    void exited.then(() => reject(new Error(`logs -f exited early: ${err}`)));
  });
  // The history arrives first: the follow is registered from then on.
  await until(() => jsonLines(out).length > 0);
  // New lines at l3: a sync of l3 alone makes it fetch from l2 and log it.
  triggeredAt = Date.now();
  const sync = await hsctl(["sync", "--level", "l0/l1/l2/l3", "--json"], env, 120_000);
  assert.equal(sync.code, 0, sync.stderr);
  await until(() => jsonLines(out).some((l) => l.lvl === "l3" && l.time >= triggeredAt));
  p.kill("SIGINT");
  assert.equal(await exited, 0, err);
  assert.equal(err, "");
  for (const c of canaries) assert.ok(!out.includes(c), "a secret of l3 left the level");
});

test("destroy --level l0/l1/l2 removes l2 and l3 only", async () => {
  const before = await levelRoots(l0);
  assert.equal(before.length, 4);
  const d = await hsctl(["destroy", "--level", "l0/l1/l2", "--json"], env, 120_000);
  assert.equal(d.code, 0, d.stderr);
  const s = await hsctl(["status", "--json"], env, 60_000);
  const st = JSON.parse(s.stdout) as Status;
  assert.deepEqual(st.children.map((c) => [c.name, c.state]), [["l1", "ready"]]);
  assert.deepEqual(st.children[0]!.children, []);
  assert.equal((await levelRoots(l0)).length, 2);
  for (const gone of before.slice(2)) assert.deepEqual(await hsdProcessesUnder(gone), [], gone);
  for (const kept of before.slice(0, 2)) assert.equal((await hsdProcessesUnder(kept)).length >= 1, true, kept);
});
