// Large-pack sync benchmark (issue 16): checkouts whose pack is 100 MB and
// 500 MB of incompressible blobs in 10 commits, exported by level 0 and
// fetched by a child level (syncFromParent in a long-lived process) and, as
// the baseline in the same run, by the git CLI over OpenSSH from the same
// endpoint. Prints full and one-commit incremental syncs, peak RSS of both
// fetchers, cost per MB at each size, and level 0's first export refresh
// against `git clone --local` of the same checkout.
// Goals: full <= 1.5x git CLI, incremental <= 250 ms, fetcher peak RSS <= 200 MiB.
// Sizes: HSD_BENCH_LARGE_MB=100,500 (the default). Run: npm run bench -- sync-large

import { mkdtemp, rm, mkdir } from "node:fs/promises";
import { tmpdir, loadavg } from "node:os";
import { join } from "node:path";
import { refreshExports } from "../src/git/export-repos.js";
import { loadOrCreateLevelKeys } from "../src/ssh/level-keys.js";
import { levelPaths } from "../src/config/level-layout.js";
import { silentLogger } from "../src/log/logger.js";
import { generateLargeRepo, addLargeRepoCommit } from "../test/helpers/large-repo.js";
import { startFetcher, startServer, cliAll, runProc, type ChildResult } from "./lib/sync-harness.js";

const PATTERNS = ["secrets.yaml", "*.key", "id_rsa*", "*.pem"];
const NAME = "bulk";

interface SizeResult {
  mb: number; packMiB: number; genMs: number; refreshMs: number; cloneLocalMs: number; noopRefreshMs: number;
  full: ChildResult; fullCli: { ms: number; maxRssMiB: number };
  inc: ChildResult; incCli: { ms: number; maxRssMiB: number };
  inc2: ChildResult; inc2Cli: { ms: number; maxRssMiB: number };
}

async function one(mb: number): Promise<SizeResult> {
  const dir = await mkdtemp(join(tmpdir(), `hsd-bench-large-${mb}-`));
  let stop: (() => Promise<void>) | undefined;
  try {
    const checkout = join(dir, "operator", NAME);
    let t = performance.now();
    await generateLargeRepo(checkout, { bytes: mb * 1024 * 1024 });
    const genMs = performance.now() - t;
    const du = await runProc("du", ["-sk", join(checkout, ".git", "objects", "pack")]);
    const packMiB = Number(du.stdout.split("\t")[0]) / 1024;

    // Level 0's first refresh of the checkout, then git's own local clone of it.
    const p0 = levelPaths(join(dir, "l0"));
    const repos = { [NAME]: checkout };
    t = performance.now();
    await refreshExports({ repos, exportsDir: p0.reposDir, secretPatterns: PATTERNS, log: silentLogger() });
    const refreshMs = performance.now() - t;
    t = performance.now();
    await refreshExports({ repos, exportsDir: p0.reposDir, secretPatterns: PATTERNS, log: silentLogger() });
    const noopRefreshMs = performance.now() - t;
    t = performance.now();
    const cl = await runProc("git", ["clone", "-q", "--local", "--bare", checkout, join(dir, "clone-local.git")]);
    const cloneLocalMs = performance.now() - t;
    if (cl.code !== 0) throw new Error(`git clone --local: ${cl.stderr}`);
    await rm(join(dir, "clone-local.git"), { recursive: true, force: true });

    const child1 = await loadOrCreateLevelKeys(join(dir, "l1", "keys"), { name: "l1" });
    const server = await startServer({ root: p0.root, names: [NAME], readerKey: child1.publicKey });
    stop = server.stop;
    const env = await server.cliEnv(dir, child1.userKeyPath);
    const cliDir = join(dir, "cli");
    await mkdir(cliDir);
    const fullCli = await cliAll([NAME], (n) => ["clone", "-q", `ssh://hsd@127.0.0.1:${server.port}/${n}`, join(cliDir, n)], env, cliDir);
    const fetcher = startFetcher({ host: "127.0.0.1", port: server.port, fp: server.fp, key: child1.userKeyPath, names: [NAME], root: join(dir, "l1") });
    try {
      const full = await fetcher.sync();
      await addLargeRepoCommit(checkout);
      await refreshExports({ repos, exportsDir: p0.reposDir, secretPatterns: PATTERNS, log: silentLogger() });
      const incCli = await cliAll([NAME], (n) => ["-C", join(cliDir, n), "pull", "-q", "--ff-only"], env, cliDir);
      const inc = await fetcher.sync();
      // A second one: the first status after a full checkout re-hashes "racily clean" files
      // (written in the index's timestamp tick), which both the CLI and hsd pay once.
      await addLargeRepoCommit(checkout, 100 * 1024, "inc2");
      await refreshExports({ repos, exportsDir: p0.reposDir, secretPatterns: PATTERNS, log: silentLogger() });
      const inc2Cli = await cliAll([NAME], (n) => ["-C", join(cliDir, n), "pull", "-q", "--ff-only"], env, cliDir);
      const inc2 = await fetcher.sync();
      return { mb, packMiB, genMs, refreshMs, cloneLocalMs, noopRefreshMs, full, fullCli, inc, incCli, inc2, inc2Cli };
    } finally {
      await fetcher.stop();
    }
  } finally {
    await stop?.();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const sizes = (process.env.HSD_BENCH_LARGE_MB ?? "100,500").split(",").map((s) => Number(s.trim())).filter((n) => n > 0);
  const results: SizeResult[] = [];
  for (const mb of sizes) results.push(await one(mb));

  const f = (n: number, w = 6) => n.toFixed(0).padStart(w);
  console.log("one repo of 100 KiB random files in 10 commits; fetcher = syncFromParent in a long-lived process; git CLI = clone/pull over OpenSSH; same endpoint");
  console.log("pack      full: hsd    git CLI  ratio   hsd RSS  CLI RSS   incr. 1st: hsd  git CLI   2nd: hsd  git CLI   hsd ms/MB  CLI ms/MB   L0 first refresh  clone --local");
  for (const r of results) {
    console.log(`${f(r.packMiB, 4)} MiB  ${f(r.full.ms)} ms ${f(r.fullCli.ms)} ms  ${(r.full.ms / r.fullCli.ms).toFixed(2).padStart(5)}x  ${f(r.full.maxRssMiB, 4)} MiB ${f(r.fullCli.maxRssMiB, 4)} MiB  ${f(r.inc.ms, 7)} ms ${f(r.incCli.ms)} ms  ${f(r.inc2.ms, 5)} ms ${f(r.inc2Cli.ms)} ms  ${(r.full.ms / r.packMiB).toFixed(1).padStart(8)}   ${(r.fullCli.ms / r.packMiB).toFixed(1).padStart(8)}   ${f(r.refreshMs, 9)} ms    ${f(r.cloneLocalMs)} ms`);
  }
  console.log("(hsd RSS: the fetching node process's own peak; git index-pack runs beside it as git's does. CLI RSS: largest peak among git, ssh, index-pack.");
  console.log(` L0 refresh unchanged: ${results.map((r) => `${f(r.noopRefreshMs, 0)} ms`).join(", ")}; repo generation: ${results.map((r) => `${(r.genMs / 1000).toFixed(1)} s`).join(", ")})`);
  // CPU, which other people's load on a shared host moves far less than wall time: is a miss the host or the work?
  for (const r of results) {
    const cpu = (x: ChildResult) => `${f(x.cpuMs + x.gitCpuMs, 0)} ms (node ${f(x.cpuMs, 0)} + git ${f(x.gitCpuMs, 0)})`;
    console.log(`${f(r.packMiB, 4)} MiB  incremental CPU of the fetching level: 1st ${cpu(r.inc)}, 2nd ${cpu(r.inc2)}; load ${loadavg().map((l) => l.toFixed(1)).join(" ")}`);
  }
  const goals = [
    ["full <= 1.5x git CLI at every size", results.every((r) => r.full.ms <= 1.5 * r.fullCli.ms)],
    ["incremental <= 250 ms at every size (1st after the full sync)", results.every((r) => r.inc.ms <= 250)],
    ["incremental <= 250 ms at every size (2nd)", results.every((r) => r.inc2.ms <= 250)],
    ["fetcher peak RSS <= 200 MiB at every size", results.every((r) => Math.max(r.full.maxRssMiB, r.inc.maxRssMiB, r.inc2.maxRssMiB) <= 200)],
  ] as const;
  for (const [g, ok] of goals) console.log(`goal ${ok ? "MET " : "MISS"}: ${g}`);
}

await main();
