// R2: network partition between level 1 and level 2 (--isolation netns, so
// CI runs this as root). The veth joining l1's and l2's namespaces is taken
// down (a) while l2 holds in its sync and (b) while l2 holds in its nest
// handler; without the partition each hold would last until the phase budget
// (minutes), so a prompt typed failure (PeerGone / ConnectTimeout) can only
// come from the dropped link being noticed. The time to that failure is a
// figure, never asserted. After linkUp the next nest resumes and completes.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, rm, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hsctl, jsonLines, hsdProcessesUnder, type RunResult } from "../../helpers/hsctl.js";
import { indexOfAddress, linkDown, linkUp, netnsHandle, runnerInNetns, type NetnsHandle } from "../../../src/providers/local/netns.js";
import { runCommand } from "../../../src/util/command-runner.js";
import { figure } from "../lib/figures.js";

const root = await mkdtemp(join(tmpdir(), "hsd-rel-part-"));
const l0 = join(root, "l0");
const l1 = join(l0, "state/levels/l1");
const markers = join(root, "fault-markers");
/** The test's own deadline per nest run: generous; reaching it counts as a hang. */
const DEADLINE_MS = 300_000;
const CONNECT = "3s";
const FAULTS = "l2:sync:hold-once,l2:nest:hold-once";
let cut: { handle: NetnsHandle; l1ns: string } | undefined;

after(async () => {
  if (cut) await linkUp(cut.handle, runnerInNetns(runCommand, cut.l1ns)).catch(() => undefined);
  await hsctl(["destroy"], { HSD_ROOT: l0 }, 120_000).catch(() => undefined);
  for (const pid of await hsdProcessesUnder(root)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  if (process.env.HSD_RELIABILITY_KEEP !== "1") await rm(root, { recursive: true, force: true });
});

type NsData = { nsName: string; childAddr: string };
async function childNetns(levelRoot: string, child: string): Promise<NsData> {
  const j = JSON.parse(await readFile(join(levelRoot, "state/journal.json"), "utf8")) as {
    children: Record<string, { handle?: { data?: { netns?: NsData } } }>;
  };
  const ns = j.children[child]?.handle?.data?.netns;
  if (!ns) throw new Error(`no netns recorded for ${child} in ${levelRoot}`);
  return ns;
}

/** The l1-l2 veth: its parent end lives in l1's namespace, so ip runs there. */
async function l1l2Link(): Promise<{ handle: NetnsHandle; l1ns: string }> {
  const l1ns = (await childNetns(l0, "l1")).nsName;
  const l2 = await childNetns(l1, "l2");
  const base = l2.childAddr.split(".").slice(0, 2).join(".");
  return { handle: netnsHandle(l2.nsName, base, indexOfAddress(base, l2.childAddr)!), l1ns };
}

function nest(onEvent?: (ev: Record<string, any>) => void): Promise<RunResult> {
  return hsctl(["nest", "--depth", "3", "--isolation", "netns", "--json"], { HSD_ROOT: l0, HSD_FAULTS: FAULTS, HSD_FAULTS_DIR: markers }, DEADLINE_MS, (line) => {
    if (onEvent && line.startsWith("{")) onEvent(JSON.parse(line));
  });
}

/** One nest run in which the l1-l2 link is cut once l2 announces its hold in `phase`. */
async function partitionedRun(phase: "sync" | "nest"): Promise<{ r: RunResult; failed: Record<string, any>; ms: number }> {
  let downAt = 0;
  let failedAt = 0;
  let cutting: Promise<void> | undefined;
  const r = await nest((ev) => {
    if (!cutting && ev.level === "l0/l1/l2" && ev.phase === phase && ev.kind === "log" && /fault: holding/.test(ev.message ?? "")) {
      cutting = l1l2Link().then(async (c) => {
        cut = c;
        await linkDown(c.handle, runnerInNetns(runCommand, c.l1ns));
        downAt = Date.now();
      });
    }
    if (!failedAt && ev.level === "l0/l1/l2" && ev.kind === "failed") failedAt = Date.now();
  });
  await cutting;
  assert.ok(cutting && downAt > 0, `${phase}: the link was never cut:\n${r.stdout.slice(-2000)}\n${r.stderr}`);
  assert.notEqual(r.code, null, `${phase}: nest hung until the test's own deadline`);
  assert.notEqual(r.code, 0, `${phase}: nest succeeded across a partition`);
  const failed = jsonLines(r.stdout).find((e) => e.kind === "failed" && e.level === "l0/l1/l2");
  assert.ok(failed, `${phase}: no failure for l0/l1/l2:\n${r.stdout.slice(-2000)}`);
  return { r, failed, ms: failedAt - downAt };
}

async function heal(): Promise<void> {
  assert.ok(cut);
  await linkUp(cut.handle, runnerInNetns(runCommand, cut.l1ns));
  cut = undefined;
}

test("partition l1-l2 during sync, then during nest: typed failure, no hang; after linkUp the nest completes", async () => {
  assert.equal(process.getuid?.(), 0, "the partition test needs root (network namespaces); CI runs it as root");
  await mkdir(l0, { recursive: true, mode: 0o700 });
  // Children inherit timeouts: a small connect timeout makes every level's keepalive short.
  await writeFile(join(l0, "hsd.yaml"), `timeouts:\n  connect: ${CONNECT}\n`, { mode: 0o600 });

  // (a) l2 holds in its sync (l1 waits on l2's Sync stream); the link goes down.
  const a = await partitionedRun("sync");
  assert.equal(a.failed.phase, "sync", JSON.stringify(a.failed));
  assert.ok(["PeerGone", "ConnectTimeout"].includes(a.failed.failure?.code), JSON.stringify(a.failed));
  figure("partition.sync.failure_ms", a.ms, `${a.failed.failure.code}, connect timeout ${CONNECT}`);
  await heal();

  // (b) The next run resumes l2 (its sync now succeeds), then l2 holds in its nest handler; the link goes down again.
  const b = await partitionedRun("nest");
  const evB = jsonLines(b.r.stdout);
  assert.ok(evB.some((e) => e.level === "l0/l1/l2" && e.phase === "sync" && e.kind === "finished"), "l2's sync did not recover after linkUp");
  assert.equal(b.failed.phase, "nest", JSON.stringify(b.failed));
  assert.ok(["PeerGone", "ConnectTimeout"].includes(b.failed.failure?.code), JSON.stringify(b.failed));
  figure("partition.nest.failure_ms", b.ms, `${b.failed.failure.code}, connect timeout ${CONNECT}`);
  await heal();

  // Healed: the nest resumes and completes, every level ready.
  const c = await nest();
  assert.equal(c.code, 0, c.stderr + c.stdout.slice(-3000));
  const ready = jsonLines(c.stdout).filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(ready, ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);
  figure("partition.recovered", "nest completed after linkUp (twice)");
});
