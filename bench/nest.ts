// Nest benchmark: `hsctl nest --depth 3` on the local provider from a cold
// start (no hsd running), as a user would run it. Prints the wall time, the
// per-level overhead (hsd's own machinery: provision, boot, install,
// handshake, secrets; sync is the payload), and the readiness latency (child
// announced ready -> parent's next phase started). Baseline, same run: the
// serial work that cannot be avoided in a cold nest: level 0's hsd started (the
// nest starts it, and the clones below are served by it), then per level a bare
// hsd start to ready + the git CLI cloning the repo set over OpenSSH from the
// level-0 endpoint; each the median of as many measurements as the nest's cold
// runs. Printed too: the ratio against the older baseline, which left out level
// 0's start (depth x (start + clone)), so numbers from before stay comparable.
// Goals: depth 3 <= 6 s on 2 cores (median of HSD_BENCH_NEST_RUNS cold runs, default 5);
// <= 2 s overhead per level; readiness <= 100 ms. Also printed: the CPU time
// of the same two sides (every process involved, git and ssh included), which
// the host's other load moves far less than wall time.

import { mkdtemp, rm, stat, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { readyFromPipe } from "../src/util/ready-pipe.js";
import { hsdProcessesUnder } from "../test/helpers/hsctl.js";
import { procCpuMs, sumCpuMs } from "./lib/proc-cpu.js";
import { median } from "./lib/median.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const HSCTL = join(REPO, "dist/cli/hsctl.js");
const HSD = join(REPO, "dist/daemon/hsd.js");
const DEPTH = 3;

interface Ev { level: string; phase: string; kind: string; time: string; durationMs?: number }

function run(args: string[], env: Record<string, string>): { ms: number; out: string; code: number | null } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [HSCTL, ...args], { env: { ...process.env, ...env }, encoding: "utf8", maxBuffer: 1 << 28 });
  return { ms: performance.now() - t0, out: r.stdout, code: r.status };
}

/**
 * A cold nest's CPU: hsctl's (a waited child of this process) plus every
 * hsd of the tree, read while they all still run (each holds the git, ssh
 * and step processes it waited for).
 */
async function nestCpuMs(root: string, hsctlCpuMs: number): Promise<number> {
  return hsctlCpuMs + (await sumCpuMs(await hsdProcessesUnder(root)));
}

async function bareHsdStart(dir: string): Promise<{ ms: number; cpuMs: number }> {
  // One configured repo (never read before a sync): no demo set generated behind the measurement.
  await writeFile(join(dir, "hsd.yaml"), `ssh: { host: 127.0.0.1, port: 0 }\nrepos: { bootstrap: ${join(dir, "bootstrap")} }\nparent: null\n`);
  const t0 = performance.now();
  // Started as every hsd is (no node flags; its entry sets its V8 flags): V8 rejects a code cache
  // written under other flags, so a start with others parses the whole bundle and would inflate the baseline.
  const p = spawn(process.execPath, [HSD, "run", "--root", dir], { stdio: ["ignore", "ignore", "ignore", "pipe"], env: { ...process.env, HSD_READY_FD: "3" } });
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error("bare hsd not ready in 30 s")), 30_000);
  await readyFromPipe(p, ac.signal, async () => "");
  clearTimeout(timer);
  const ms = performance.now() - t0;
  const cpuMs = await procCpuMs(p.pid!);
  p.kill("SIGTERM");
  await new Promise((r) => p.once("exit", r));
  // Its CPU up to ready: the shutdown is not part of a start.
  return { ms, cpuMs };
}

/** Wall times on a shared 2-core VM vary by ~+-20% run to run: the goal is judged on the median of this many cold runs. */
const RUNS = Math.max(1, Number(process.env.HSD_BENCH_NEST_RUNS ?? 5));

/**
 * One more cold `nest --depth 3` in a fresh root; its wall time. The tree's
 * daemons are stopped at once, but its files are removed only after every
 * run: on this VM (ext4 mounted with `discard`) deleting a tree's ~20 MB
 * stalls the next run's fsyncs, which made each run of a series slower than
 * the one before (4.4 -> 5.9 s over four runs with deletes between them;
 * 4.2-5.3 s flat without).
 */
async function coldWall(roots: string[]): Promise<{ ms: number; cpuMs: number }> {
  const r = await mkdtemp(join(tmpdir(), "hsd-bench-nest-"));
  roots.push(r);
  const c0 = await procCpuMs("self");
  const n = run(["nest", "--depth", String(DEPTH), "--json"], { HSD_ROOT: join(r, "l0") });
  const cpuMs = await nestCpuMs(r, (await procCpuMs("self")) - c0);
  await stopDaemonsUnder(r);
  if (n.code !== 0) throw new Error(`nest failed:\n${n.out.slice(-2000)}`);
  return { ms: n.ms, cpuMs };
}

/** SIGTERM to every hsd whose command line names a directory under `dir`, then wait until they are gone (bounded). */
async function stopDaemonsUnder(dir: string): Promise<void> {
  const pids = await hsdProcessesUnder(dir);
  for (const pid of pids) { try { process.kill(pid, "SIGTERM"); } catch { /* gone */ } }
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline && (await hsdProcessesUnder(dir)).length > 0) await new Promise((r) => setTimeout(r, 50));
  for (const pid of await hsdProcessesUnder(dir)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
}

async function main(): Promise<void> {
  const walls: number[] = [];
  const cpus: number[] = [];
  const coldRoots: string[] = [];
  for (let i = 1; i < RUNS; i++) {
    const c = await coldWall(coldRoots);
    walls.push(c.ms);
    cpus.push(c.cpuMs);
  }
  const root = await mkdtemp(join(tmpdir(), "hsd-bench-nest-"));
  const env = { HSD_ROOT: join(root, "l0") };
  try {
    const c0 = await procCpuMs("self");
    const nest = run(["nest", "--depth", String(DEPTH), "--json"], env);
    if (nest.code !== 0) throw new Error(`nest failed:\n${nest.out.slice(-2000)}`);
    cpus.push(await nestCpuMs(root, (await procCpuMs("self")) - c0));
    const events = nest.out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Ev);

    // Per-level machinery time and readiness latency, from the events and ready.json mtimes.
    const machinery = ["provision", "boot", "install", "handshake", "secrets"];
    const rows: string[] = [];
    const details: string[] = [];
    const latencies: number[] = [];
    let levelRoot = env.HSD_ROOT;
    for (let d = 1; d <= DEPTH; d++) {
      const path = ["l0", ...Array.from({ length: d }, (_, i) => `l${i + 1}`)].join("/");
      const fin = events.filter((e) => e.level === path && e.kind === "finished");
      const overhead = fin.filter((e) => machinery.includes(e.phase)).reduce((s, e) => s + (e.durationMs ?? 0), 0);
      const sync = fin.find((e) => e.phase === "sync")?.durationMs ?? 0;
      levelRoot = join(levelRoot, "state", "levels", `l${d}`);
      const readyAt = (await stat(join(levelRoot, "run", "ready.json"))).mtimeMs;
      const hs = events.find((e) => e.level === path && e.phase === "handshake" && e.kind === "started");
      const latency = hs ? Date.parse(hs.time) - readyAt : NaN;
      latencies.push(latency);
      rows.push(`  ${path.padEnd(12)} overhead ${overhead.toFixed(0).padStart(5)} ms   sync ${sync.toFixed(0).padStart(5)} ms   readiness latency ${latency.toFixed(0).padStart(4)} ms`);
      // Printed detail only (not part of any goal): where a level's time goes, configure included.
      const ms = (phase: string) => (fin.find((e) => e.phase === phase)?.durationMs ?? 0).toFixed(0);
      details.push(`  ${path.padEnd(12)} install ${ms("install")}, handshake ${ms("handshake")}, sync ${ms("sync")}, secrets ${ms("secrets")}, configure ${ms("configure")} ms`);
    }
    // Level 0 refreshes its exports (a cold one: generates the demo set first) while l1 is built; l1's sync waits for them.
    const l1Sync = events.find((e) => e.level === "l0/l1" && e.phase === "sync" && e.kind === "started");
    const l0Exported = events.find((e) => e.level === "l0" && e.phase === "sync" && e.kind === "finished");
    const exportWait = l1Sync && l0Exported ? Math.max(0, Date.parse(l0Exported.time) - Date.parse(l1Sync.time)) : NaN;

    // Same-run baseline: a bare hsd start, and the git CLI cloning the set from level 0's endpoint.
    // Each side of the baseline is the median of RUNS measurements, as the nest is: one
    // sample of a ~200 ms operation moved the ratio by ~0.2x from run to run on its own.
    const starts: { ms: number; cpuMs: number }[] = [];
    for (let i = 0; i < RUNS; i++) {
      const bare = await mkdtemp(join(tmpdir(), "hsd-bench-bare-"));
      starts.push(await bareHsdStart(bare).finally(() => rm(bare, { recursive: true, force: true })));
    }
    const startMs = median(starts.map((x) => x.ms));
    const startCpuMs = median(starts.map((x) => x.cpuMs));
    const ready = JSON.parse(await readFile(join(env.HSD_ROOT, "run", "ready.json"), "utf8")) as { sshPort: number; hostKeyFingerprint: string; pid: number };
    const l1 = join(env.HSD_ROOT, "state", "levels", "l1");
    const key = join(l1, "keys", "id_ed25519"); // l1 is an authorized reader of l0
    const known = join(root, "known_hosts");
    const hostPub = spawnSync("ssh-keygen", ["-y", "-f", join(env.HSD_ROOT, "keys", "ssh_host_ed25519_key")], { encoding: "utf8" }).stdout.trim();
    await writeFile(known, `[127.0.0.1]:${ready.sshPort} ${hostPub}\n`);
    const sshCmd = `ssh -i ${key} -o IdentitiesOnly=yes -o UserKnownHostsFile=${known} -o StrictHostKeyChecking=yes -p ${ready.sshPort}`;
    const names = ["bootstrap", "ansible", "iac-driver", "tofu", "packer", "site-config"];
    const clones: { ms: number; cpuMs: number }[] = [];
    // Every clone gets its own directory, all removed with the root at the end: deleting a
    // checkout between runs would slow the next run's file creation (see coldWall).
    for (let i = 0; i < RUNS; i++) {
      const cloneDir = join(root, `git-cli-${i}`);
      const l0Cpu0 = await procCpuMs(ready.pid);
      const cc0 = await procCpuMs("self");
      const t0 = performance.now();
      await Promise.all(names.map((n) => new Promise<void>((res, rej) => {
        const p = spawn("git", ["clone", "-q", `ssh://hsd@127.0.0.1/${n}`, join(cloneDir, n)], { env: { ...process.env, GIT_SSH_COMMAND: sshCmd }, stdio: "ignore" });
        p.on("exit", (c) => (c === 0 ? res() : rej(new Error(`git clone ${n} exited ${c}`))));
      })));
      const ms = performance.now() - t0;
      // The clones' CPU: git and ssh here, upload-pack under level 0's hsd (its delta: nothing else runs there now).
      clones.push({ ms, cpuMs: (await procCpuMs("self")) - cc0 + (await procCpuMs(ready.pid)) - l0Cpu0 });
    }
    const cloneMs = median(clones.map((x) => x.ms));
    const cloneCpuMs = median(clones.map((x) => x.cpuMs));
    // Level 0's start is serial and unavoidable too: the nest measured starts it, and every clone is served by it.
    const baseline = (DEPTH + 1) * startMs + DEPTH * cloneMs;
    const baselineCpu = (DEPTH + 1) * startCpuMs + DEPTH * cloneCpuMs;
    const olderBaseline = DEPTH * (startMs + cloneMs);

    console.log(`nest --depth ${DEPTH} (local provider, cold start incl. level-0 hsd and demo repos)`);
    walls.push(nest.ms);
    const sorted = [...walls].sort((a, b) => a - b);
    const nestMedian = median(walls);
    console.log(`  wall time, median of ${walls.length} cold runs   ${(nestMedian / 1000).toFixed(2)} s   (goal <= 6 s; runs ${sorted.map((w) => (w / 1000).toFixed(2)).join(", ")} s)`);
    console.log(`  the run measured below ${(nest.ms / 1000).toFixed(2)} s`);
    for (const r of rows) console.log(r);
    console.log("  phases of the run measured (ms; detail, not a goal):");
    for (const d of details) console.log(d);
    console.log(`  l1's sync waited ${exportWait.toFixed(0)} ms for level 0's first exports (the demo set level 0 makes at start)`);
    const maxOverhead = Math.max(...rows.map((r) => Number(/overhead\s+(\d+)/.exec(r)![1])));
    console.log(`  max per-level overhead ${maxOverhead} ms (goal <= 2000 ms); max readiness latency ${Math.max(...latencies).toFixed(0)} ms (goal <= 100 ms)`);
    console.log(`  baseline: level 0's start + ${DEPTH} x (bare hsd start + git CLI clone of the set) = ${DEPTH + 1} x ${startMs.toFixed(0)} ms + ${DEPTH} x ${cloneMs.toFixed(0)} ms = ${(baseline / 1000).toFixed(2)} s (medians of ${RUNS}; starts ${starts.map((x) => x.ms.toFixed(0)).join(", ")} ms; clones ${clones.map((x) => x.ms.toFixed(0)).join(", ")} ms)`);
    console.log(`  ratio wall (median) / baseline = ${(nestMedian / baseline).toFixed(2)}x; against the older baseline without level 0's start (${(olderBaseline / 1000).toFixed(2)} s) ${(nestMedian / olderBaseline).toFixed(2)}x`);
    const cpuMedian = median(cpus);
    console.log(`  CPU (all processes): nest median of ${cpus.length} ${(cpuMedian / 1000).toFixed(2)} s (runs ${cpus.map((c) => (c / 1000).toFixed(2)).join(", ")} s); baseline ${DEPTH + 1} x bare hsd start ${startCpuMs.toFixed(0)} ms + ${DEPTH} x clone ${cloneCpuMs.toFixed(0)} ms = ${(baselineCpu / 1000).toFixed(2)} s; ratio ${(cpuMedian / baselineCpu).toFixed(2)}x; load ${(await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ")}`);
    console.log(`goal ${nestMedian <= 1.5 * baseline ? "MET " : "MISS"}: nest --depth ${DEPTH} cold <= 1.5x its same-run baseline (${(nestMedian / baseline).toFixed(2)}x)`);
  } finally {
    run(["destroy"], env);
    await rm(root, { recursive: true, force: true });
    for (const r of coldRoots) {
      run(["destroy"], { HSD_ROOT: join(r, "l0") });
      await rm(r, { recursive: true, force: true });
    }
  }
}

await main();
