// Sync benchmark: a child level fetching the demo repo set from a live
// endpoint, isomorphic-git (syncFromParent) vs the git CLI over OpenSSH, full
// and after one commit, with the fetching process's peak RSS. Goals: full <=
// 1.5x git CLI, incremental <= 250 ms for the set, peak RSS <= 200 MiB.
// Run: node --import tsx bench/sync.ts   (re-invokes itself with --child).
// HSD_BENCH_JS_INDEX=1 keeps every pack in isomorphic-git's JS indexer (the
// path before divert-pack.ts), HSD_BENCH_LOG=debug logs per-repo timings.

import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { generateDemoRepos, addCommit } from "../src/demo/demo-repos.js";
import { refreshExports, resolverFor } from "../src/git/export-repos.js";
import { syncFromParent } from "../src/git/sync-from-parent.js";
import { startSshEndpoint } from "../src/ssh/ssh-endpoint.js";
import { AuthorizedKeyStore } from "../src/ssh/authorized-key-store.js";
import { loadOrCreateLevelKeys } from "../src/ssh/level-keys.js";
import { levelPaths } from "../src/config/level-layout.js";
import { silentLogger, createLogger } from "../src/log/logger.js";
import { pino } from "pino";
import ssh2 from "ssh2";
import { gitUploadPack } from "../src/git/upload-pack.js";

const self = fileURLToPath(import.meta.url);
const PATTERNS = ["secrets.yaml", "*.key", "id_rsa*", "*.pem"];

interface ChildArgs { host: string; port: number; fp: string; key: string; names: string[]; root: string }
interface ChildResult { ms: number; cpuMs: number; bytes: number; maxRssMiB: number }

/**
 * The fetching level, as a long-lived process like the hsd daemon: one sync
 * per "sync" line on stdin, one JSON result line each. Peak RSS is the
 * process's max so far.
 */
async function child(args: ChildArgs): Promise<void> {
  const p = levelPaths(args.root);
  const log = process.env.HSD_BENCH_LOG ? createLogger({ level: process.env.HSD_BENCH_LOG, destination: pino.destination(2) }) : silentLogger();
  const { createInterface } = await import("node:readline");
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() !== "sync") continue;
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const res = await syncFromParent({
      parent: { host: args.host, port: args.port, hostKeyFingerprint: args.fp }, userKeyPath: args.key,
      repoNames: args.names, exportsDir: p.reposDir, workDir: p.workDir, connectTimeoutMs: 10_000,
      commandTimeoutMs: 120_000, log,
      // HSD_BENCH_JS_INDEX=1: every pack indexed by isomorphic-git, as before divert-pack.ts (for comparison).
      ...(process.env.HSD_BENCH_JS_INDEX ? { divertMinObjects: Infinity } : {}),
    });
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const out: ChildResult = { ms, cpuMs: (c.user + c.system) / 1000, bytes: res.bytes, maxRssMiB: process.resourceUsage().maxRSS / 1024 };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  }
}

/** Drives the fetching child: each call runs one sync in it and returns the result. */
function startFetcher(a: ChildArgs): { sync: () => Promise<ChildResult>; stop: () => Promise<void> } {
  const extra = process.env.HSD_BENCH_CHILD_FLAGS ? process.env.HSD_BENCH_CHILD_FLAGS.split(" ") : [];
  const c = spawn(process.execPath, [...extra, "--import", "tsx", self, "--child", JSON.stringify(a)], { stdio: ["pipe", "pipe", "inherit"] });
  let buf = "";
  const waiters: ((line: string) => void)[] = [];
  c.stdout.on("data", (b) => {
    buf += b;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) { const line = buf.slice(0, i); buf = buf.slice(i + 1); waiters.shift()?.(line); }
  });
  return {
    sync: () => new Promise<ChildResult>((resolve, reject) => {
      if (c.exitCode !== null || c.signalCode !== null) return reject(new Error(`fetcher exited ${c.exitCode ?? c.signalCode}`));
      const t = setTimeout(() => reject(new Error("child sync timed out")), 300_000);
      const onExit = (code: number | null) => { clearTimeout(t); reject(new Error(`fetcher exited ${code}`)); };
      c.once("exit", onExit);
      waiters.push((line) => { clearTimeout(t); c.removeListener("exit", onExit); resolve(JSON.parse(line) as ChildResult); });
      c.stdin.write("sync\n");
    }),
    stop: () => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve(); // it died already (its error is on stderr)
      const t = setTimeout(() => c.kill("SIGKILL"), 5_000);
      c.once("exit", () => { clearTimeout(t); resolve(); });
      c.stdin.end();
    }),
  };
}

function runProc(cmd: string, args: string[], env?: NodeJS.ProcessEnv, cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { env: env ?? process.env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (b) => { stdout += b; });
    c.stderr.on("data", (b) => { stderr += b; });
    const t = setTimeout(() => c.kill("SIGKILL"), 300_000);
    c.on("error", reject);
    c.on("close", (code) => { clearTimeout(t); resolve({ code: code ?? -1, stdout, stderr }); });
  });
}

/** Runs one git command per repo, all in parallel (as the CLI would be scripted), timed inside one small driver process. */
async function cliAll(names: string[], action: (n: string) => string[], env: NodeJS.ProcessEnv, cwd: string): Promise<{ ms: number }> {
  const script = `
    const { spawn } = require("node:child_process");
    const jobs = JSON.parse(process.argv[1]);
    const t0 = performance.now();
    Promise.all(jobs.map((args) => new Promise((res, rej) => {
      const c = spawn("git", args, { stdio: ["ignore", "ignore", "pipe"] });
      let e = ""; c.stderr.on("data", (b) => e += b);
      c.on("close", (code) => code === 0 ? res() : rej(new Error(e)));
    }))).then(() => {
      console.log(JSON.stringify({ ms: performance.now() - t0 }));
    }, (err) => { console.error(String(err)); process.exit(1); });`;
  const r = await runProc(process.execPath, ["-e", script, JSON.stringify(names.map(action))], env, cwd);
  if (r.code !== 0) throw new Error(`git CLI failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as { ms: number };
}

interface ServeArgs { root: string; names: string[]; readerKey: string }

/** The parent level's endpoint in its own process, as the hsd daemon runs it. Prints {port, fp}; exits when stdin closes. */
async function serve(a: ServeArgs): Promise<void> {
  const p0 = levelPaths(a.root);
  const keys = await loadOrCreateLevelKeys(p0.keysDir, { name: "l0" });
  const store = new AuthorizedKeyStore(p0.accessKeys, silentLogger());
  store.addStaticKey({ publicKey: a.readerKey, role: "reader" });
  const ep = await startSshEndpoint({
    host: "127.0.0.1", port: 0, hostKeyPath: keys.hostKeyPath, grpcSocketPath: p0.socket, keys: store, uploadPack: gitUploadPack,
    repos: resolverFor(p0.reposDir, a.names), maxUploadPacks: 8, queueTimeoutMs: 30_000, uploadPackTimeoutS: 60,
    authFailureDelayMs: 200, log: silentLogger(),
  });
  process.stdout.write(`${JSON.stringify({ port: ep.address().port, fp: ep.hostKeyFingerprint, hostKeyPath: keys.hostKeyPath })}\n`);
  process.stdin.resume();
  await new Promise((r) => process.stdin.once("end", r));
  await ep.close();
}

async function startServer(a: ServeArgs): Promise<{ port: number; fp: string; hostKeyPath: string; stop: () => Promise<void> }> {
  const c = spawn(process.execPath, ["--import", "tsx", self, "--serve", JSON.stringify(a)], { stdio: ["pipe", "pipe", "inherit"] });
  const line = await new Promise<string>((resolve, reject) => {
    let buf = "";
    const t = setTimeout(() => { c.kill("SIGKILL"); reject(new Error("endpoint did not start")); }, 30_000);
    c.stdout.on("data", (b) => { buf += b; if (buf.includes("\n")) { clearTimeout(t); resolve(buf.split("\n")[0]!); } });
    c.on("exit", (code) => { clearTimeout(t); reject(new Error(`endpoint exited ${code}`)); });
  });
  const info = JSON.parse(line) as { port: number; fp: string; hostKeyPath: string };
  return {
    ...info,
    stop: () => new Promise<void>((resolve) => {
      c.removeAllListeners("exit");
      const t = setTimeout(() => c.kill("SIGKILL"), 5_000);
      c.once("exit", () => { clearTimeout(t); resolve(); });
      c.stdin.end();
    }),
  };
}

async function main(): Promise<void> {
  if (process.argv[2] === "--child") return child(JSON.parse(process.argv[3]!) as ChildArgs);
  if (process.argv[2] === "--serve") return serve(JSON.parse(process.argv[3]!) as ServeArgs);
  const dir = await mkdtemp(join(tmpdir(), "hsd-bench-"));
  let endpoint: { stop: () => Promise<void> } | undefined;
  try {
    const t0 = performance.now();
    const checkouts = await generateDemoRepos(join(dir, "operator"), { seed: 42 });
    const genMs = performance.now() - t0;
    const names = Object.keys(checkouts);
    const p0 = levelPaths(join(dir, "l0"));
    const t1 = performance.now();
    await refreshExports({ repos: checkouts, exportsDir: p0.reposDir, secretPatterns: PATTERNS, log: silentLogger() });
    const refreshMs = performance.now() - t1;
    const t2 = performance.now();
    await refreshExports({ repos: checkouts, exportsDir: p0.reposDir, secretPatterns: PATTERNS, log: silentLogger() });
    const noopRefreshMs = performance.now() - t2;
    const child1 = await loadOrCreateLevelKeys(join(dir, "l1", "keys"), { name: "l1" });
    const server = await startServer({ root: p0.root, names, readerKey: child1.publicKey });
    endpoint = server;
    const port = server.port;
    const args: ChildArgs = { host: "127.0.0.1", port, fp: server.fp, key: child1.userKeyPath, names, root: join(dir, "l1") };

    // OpenSSH + git CLI environment.
    const hostPub = ssh2.utils.parseKey((await import("node:fs")).readFileSync(server.hostKeyPath));
    if (hostPub instanceof Error || Array.isArray(hostPub)) throw new Error("host key");
    const kh = join(dir, "known_hosts");
    await writeFile(kh, `[127.0.0.1]:${port} ssh-ed25519 ${hostPub.getPublicSSH().toString("base64")}\n`);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH, HOME: dir, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", LC_ALL: "C",
      GIT_SSH_COMMAND: `ssh -F /dev/null -i ${child1.userKeyPath} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=${kh} -o StrictHostKeyChecking=yes -p ${port}`,
    };
    const cliDir = join(dir, "cli");
    await mkdir(cliDir);

    const fullCli = await cliAll(names, (n) => ["clone", "-q", `ssh://hsd@127.0.0.1:${port}/${n}`, join(cliDir, n)], env, cliDir);
    const fetcher = startFetcher(args);
    let fullIso: ChildResult, incIso: ChildResult, noopIso: ChildResult, incCli: { ms: number };
    try {
      fullIso = await fetcher.sync();

      await addCommit(checkouts["iac-driver"]!, { "src/actions/bench_new.py": Array.from({ length: 300 }, (_, i) => `value_${i} = ${i * 31}`).join("\n") }, "bench commit");
      await refreshExports({ repos: checkouts, exportsDir: p0.reposDir, secretPatterns: PATTERNS, log: silentLogger() });
      incCli = await cliAll(names, (n) => ["-C", join(cliDir, n), "pull", "-q", "--ff-only"], env, cliDir);
      incIso = await fetcher.sync();
      noopIso = await fetcher.sync();
    } finally {
      await fetcher.stop();
    }

    const f = (n: number) => n.toFixed(0).padStart(6);
    console.log(`demo set: ${names.length} repos, generated in ${genMs.toFixed(0)} ms, level-0 export refresh ${refreshMs.toFixed(0)} ms first, ${noopRefreshMs.toFixed(0)} ms unchanged`);
    console.log("                        syncFromParent   git CLI (6 x OpenSSH)   ratio   bytes      fetcher CPU   fetcher peak RSS");
    const row = (label: string, r: ChildResult, cli?: { ms: number }) => console.log(`${label.padEnd(22)} ${f(r.ms)} ms        ${cli ? `${f(cli.ms)} ms          ${(r.ms / cli.ms).toFixed(2)}x` : "                        "}  ${String(r.bytes).padStart(8)}   ${f(r.cpuMs)} ms     ${r.maxRssMiB.toFixed(0)} MiB`);
    row("full sync", fullIso, fullCli);
    row("incremental (1 commit)", incIso, incCli);
    row("no-op re-sync", noopIso);
    console.log("(fetcher: one long-lived process like the hsd daemon; endpoint: its own process; git CLI: 6 clones/pulls in parallel;");
    console.log(" fetcher CPU: user+sys of that process during the sync, excluding the git children it spawns; wall times on a loaded host are noisy, CPU less so)");
    const goals = [
      [`full <= 1.5x git CLI`, fullIso.ms <= 1.5 * fullCli.ms],
      [`incremental <= 250 ms`, incIso.ms <= 250],
      [`peak RSS <= 200 MiB`, Math.max(fullIso.maxRssMiB, incIso.maxRssMiB) <= 200],
    ] as const;
    for (const [g, ok] of goals) console.log(`goal ${ok ? "MET " : "MISS"}: ${g}`);
  } finally {
    await endpoint?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
