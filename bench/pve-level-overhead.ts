// PVE per-level overhead on the simulator: `hsctl nest --depth 2 --provider pve`
// over the real-process simulated tree (test/pve/pve-tree.ts) with PVE's own
// task durations (timeScale 1: clone 5 s, other tasks 1 s, guest agent 20 s
// after start), level 0 holding the image every level makes its template from.
// Per level and phase it prints the wall time, the time hsd waited on PVE (the
// simulator's task run times, and the guest agent's boot delay or, if later, the
// return of the last agent call PVE held ~3 s and failed because the agent was
// not up yet: the baseline, measured in the same run) and hsd's own time (the
// rest), and the goal:
// hsd's own time beyond the provider's task time <= 2% per level. Needs root.
// The wall times are only as quiet as the machine: run it on an idle one.
// AGENT_S=60 (say) plays another guest-agent delay; pve-api.md gives 60-90 s for a
// real first boot. The goal is judged at the simulator's own 20 s unless AGENT_S is set.
// EVENTS_OUT=<file> keeps the nest's JSON event lines there (every phase's lines with
// their times), to look at one level's timeline after the run. RUNS=<n> runs the nest n
// times, each on a fresh tree, and judges each level's median (the detail is the first run's).
// Each run prints the CPU steal during its nest: on a virtual machine a busy host slows
// hsd's own steps, not the simulator's timed PVE tasks, so a noisy run reads high.

import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { startPveTree, vmNamed } from "../test/pve/pve-tree.js";
import { hsctl, jsonLines } from "../test/helpers/hsctl.js";
import { median } from "./lib/median.js";
import type { PveSim } from "../test/pve-sim/pve-sim.js";

const DEPTH = 2;
const PHASES = ["preflight", "provision", "boot", "install", "handshake", "sync", "secrets", "configure"] as const;
type Phase = (typeof PHASES)[number];
/** Which phase waits for each kind of PVE task (the level's VM on its parent's node; its template on its own node). */
const PARENT_TASKS: Record<string, Phase> = { qmclone: "provision", qmconfig: "provision", qmstart: "boot" };
const OWN_TASKS: Record<string, Phase> = { qmcreate: "configure", qmtemplate: "configure" };

const tasksMs = (sim: PveSim, types: Record<string, Phase>, into: Record<Phase, number>, as?: Phase) => {
  for (const t of sim.tasks.values()) {
    const phase = types[t.type];
    if (phase && t.endedMs !== undefined) into[as ?? phase] += t.endedMs - t.startedMs;
  }
};

const agentS = process.env.AGENT_S ? Number(process.env.AGENT_S) : undefined;
if (agentS !== undefined && !(agentS > 0)) {
  console.error(`AGENT_S must be a number of seconds, got ${JSON.stringify(process.env.AGENT_S)}`);
  process.exit(2);
}
const RUNS = process.env.RUNS ? Number(process.env.RUNS) : 1;
if (!Number.isInteger(RUNS) || RUNS < 1) {
  console.error(`RUNS must be a whole number of runs (1 or more), got ${JSON.stringify(process.env.RUNS)}`);
  process.exit(2);
}
/**
 * The machine's CPU time so far (/proc/stat's first line, in clock ticks): the busy part
 * (all but idle and iowait), and within it the steal, when the hypervisor ran other guests
 * on this machine's CPUs. A virtual machine's wall times swing with its neighbours; the
 * steal during a run says how much.
 */
function cpuTicks(): { busy: number; steal: number } {
  // user nice system idle iowait irq softirq steal (guest time is counted in user already).
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  return { busy: f.reduce((a, b) => a + b, 0) - (f[3] ?? 0) - (f[4] ?? 0), steal: f[7] ?? 0 };
}
/** Milliseconds per /proc/stat clock tick (USER_HZ is 100 on Linux). */
const TICK_MS = 10;

/** One nest on a fresh simulated tree: its per-level own/PVE ratios. `say` prints the detail (the first run's only), as EVENTS_OUT keeps its events. */
async function oneRun(say: (line: string) => void, eventsOut: string | undefined): Promise<number[]> {
  const tree = await startPveTree({
    depth: DEPTH, prefix: "hsd-bench-pve-", images: [{ name: "pve-9", bytes: 8 << 20, pinSha256: true }], image: "pve-9",
    presetTemplates: "none", timeScale: 1,
  });
  if (agentS !== undefined) {
    const own = tree.sims[0]!.faults.agentDelayMs / 1000;
    for (const sim of tree.sims) sim.faults.agentDelayMs = agentS * 1000;
    say(`guest agent up ${agentS} s after each VM's start (AGENT_S; the simulator's own is ${own} s)`);
  }
  try {
    const cpu0 = cpuTicks();
    const r = await hsctl(["nest", "--depth", String(DEPTH), "--provider", "pve", "--json"], tree.env, 900_000);
    const cpu1 = cpuTicks();
    if (r.code !== 0) throw new Error(`nest failed: ${r.stderr}\n${r.stdout.slice(-3000)}`);
    const events = jsonLines(r.stdout);
    if (eventsOut) await writeFile(eventsOut, r.stdout);
    say("per level, seconds: wall | waiting on PVE (tasks, guest agent) | hsd's own");
    const ratios: number[] = [];
    const agentNotes: string[] = [];
    for (let n = 1; n <= DEPTH; n++) {
      const path = ["l0", ...Array.from({ length: n }, (_, i) => `l${i + 1}`)].join("/");
      const wall = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
      for (const e of events) {
        if (e.level === path && e.kind === "finished" && (PHASES as readonly string[]).includes(e.phase)) wall[e.phase as Phase] += Number(e.durationMs ?? 0);
      }
      const pve = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
      const parent = tree.sims[n - 1]!;
      tasksMs(parent, PARENT_TASKS, pve);
      const vm = vmNamed(parent, `l${n}`);
      // Waiting on PVE for the agent: until it was up, or until the last call PVE failed
      // for it returned (PVE holds each such call ~3 s; the next call can only follow it).
      if (vm?.agentReadyAt !== undefined && vm.startedAt !== undefined) {
        pve.boot += Math.max(vm.agentReadyAt, vm.agentFailedUntil ?? 0) - vm.startedAt;
        agentNotes.push(`  ${path.padEnd(10)}   boot: agent up +${vm.agentReadyAt - vm.startedAt} ms after start, last failed agent call returned +${(vm.agentFailedUntil ?? vm.startedAt) - vm.startedAt} ms`);
      }
      tasksMs(tree.sims[n]!, OWN_TASKS, pve);
      // Level 0 makes its template in the preflight of its first child.
      if (n === 1) tasksMs(parent, OWN_TASKS, pve, "preflight");
      const s = (ms: number) => (ms / 1000).toFixed(1).padStart(6);
      let wallSum = 0;
      let pveSum = 0;
      for (const p of PHASES) {
        wallSum += wall[p];
        pveSum += pve[p];
        say(`  ${path.padEnd(10)} ${p.padEnd(10)} ${s(wall[p])} | ${s(pve[p])} | ${s(wall[p] - pve[p])}`);
      }
      // Where a phase's time goes: the longest waits between its consecutive lines (printed detail only).
      for (const ph of ["preflight", "provision", "install", "configure"] as const) {
        const lines = events.filter((e) => e.level === path && e.phase === ph).map((e) => ({ t: Date.parse(String(e.time)) || Number(e.time), m: String(e.message ?? e.kind) }));
        const gaps = lines.slice(1).map((e, i) => ({ ms: e.t - lines[i]!.t, m: `${lines[i]!.m.slice(0, 60)} -> ${e.m.slice(0, 60)}` })).sort((a, b) => b.ms - a.ms).slice(0, ph === "install" ? 4 : 6);
        for (const g of gaps) say(`  ${path.padEnd(10)}   ${ph} gap ${String(g.ms).padStart(4)} ms: ${g.m}`);
        // Each PVE task of the phase: when it ran, from the phase's start, and when hsd's next line came.
        const t0 = lines[0]?.t;
        const sim = ph === "configure" ? tree.sims[n]! : parent;
        const types = ph === "configure" ? OWN_TASKS : PARENT_TASKS;
        if (t0 === undefined) continue;
        const tEnd = lines.at(-1)!.t;
        for (const t of sim.tasks.values()) {
          if (types[t.type] !== ph || t.endedMs === undefined || t.startedMs < t0 || t.startedMs > tEnd) continue;
          const next = lines.find((l) => l.t >= t.endedMs!);
          say(`  ${path.padEnd(10)}   ${ph} task ${t.type} ran +${t.startedMs - t0}..+${t.endedMs - t0} ms; next line +${next ? next.t - t0 : "?"} ms (${next?.m.slice(0, 50) ?? ""})`);
        }
      }
      // Where sync's time goes: the repos' last progress and the image's, from the phase's start.
      const syncEv = events.filter((e) => e.level === path && e.phase === "sync").map((e) => ({
        t: Date.parse(String(e.time)) || Number(e.time), kind: String(e.kind), unit: String((e.progress as { unit?: string } | undefined)?.unit ?? ""),
      }));
      const t0 = syncEv.find((e) => e.kind === "started")?.t;
      if (t0 !== undefined) {
        const last = (unit: string) => Math.max(-1, ...syncEv.filter((e) => e.kind === "progress" && (unit === "bytes") === (e.unit === "bytes")).map((e) => e.t - t0));
        const end = syncEv.find((e) => e.kind === "finished")?.t;
        say(`  ${path.padEnd(10)}   sync: repos' last progress at ${last("objects")} ms, image's at ${last("bytes")} ms, finished at ${end === undefined ? "?" : end - t0} ms`);
      }
      for (const a of agentNotes.splice(0)) say(a);
      console.log(`  ${path.padEnd(10)}   own ms: ${PHASES.map((p) => `${p} ${Math.round(wall[p] - pve[p])}`).join(", ")}`);
      const ratio = (wallSum - pveSum) / pveSum;
      ratios.push(ratio);
      console.log(`  ${path.padEnd(10)} ${"total".padEnd(10)} ${s(wallSum)} | ${s(pveSum)} | ${s(wallSum - pveSum)}   own/PVE = ${(ratio * 100).toFixed(1)}%`);
    }
    const stolen = cpu1.steal - cpu0.steal;
    const busy = Math.max(1, cpu1.busy - cpu0.busy);
    console.log(`  cpu steal during the nest: ${stolen * TICK_MS} ms, ${(stolen / busy * 100).toFixed(0)}% of the time this machine's CPUs were busy (run by the hypervisor for other guests: a run its host slowed shows here)`);
    return ratios;
  } finally {
    await tree.close();
  }
}

const perRun: number[][] = [];
let failed = false;
for (let i = 0; i < RUNS && !failed; i++) {
  try {
    if (RUNS > 1) console.log(`--- run ${i + 1} of ${RUNS}`);
    perRun.push(await oneRun(i === 0 ? (l) => console.log(l) : () => {}, i === 0 ? process.env.EVENTS_OUT : undefined));
  } catch (e) {
    failed = true;
    console.error(e);
  }
}
if (!failed) {
  // The verdict is on each level's median over the runs: one noisy run on a busy machine says little.
  const levels = perRun[0]!.map((_, n) => median(perRun.map((r) => r[n]!)));
  if (RUNS > 1) console.log(`median own/PVE over ${RUNS} runs: ${levels.map((x, n) => `l${n + 1} ${(x * 100).toFixed(1)}%`).join(", ")}`);
  const worst = Math.max(...levels);
  if (agentS === undefined) console.log(`goal: hsd's own time per level <= 2% of the time it waits on PVE: ${worst <= 0.02 ? "MET" : "MISS"} (worst level ${(worst * 100).toFixed(1)}%${RUNS > 1 ? `, median of ${RUNS} runs` : ""})`);
  else console.log(`with the guest agent up after ${agentS} s: worst level ${(worst * 100).toFixed(1)}% (not the goal's verdict: that is judged at the simulator's own delay, without AGENT_S)`);
}
process.exit(failed ? 1 : 0);
