// The processes a sync bench measures: the parent level's SSH endpoint in its
// own process, a long-lived fetching level (syncFromParent, like the hsd
// daemon) reporting wall time, CPU and peak RSS per sync, and the git CLI
// over OpenSSH against the same endpoint as the baseline. Imported by
// bench/sync.ts and bench/sync-large.ts; also the entry of their child
// processes (`--child`, `--serve`).

import { writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import ssh2 from "ssh2";
import { resolverFor } from "../../src/git/export-repos.js";
import { gitUploadPack } from "../../src/git/upload-pack.js";
import { syncFromParent } from "../../src/git/sync-from-parent.js";
import { IndexRefresher } from "../../src/git/index-refresh.js";
import { startSshEndpoint } from "../../src/ssh/ssh-endpoint.js";
import { AuthorizedKeyStore } from "../../src/ssh/authorized-key-store.js";
import { loadOrCreateLevelKeys } from "../../src/ssh/level-keys.js";
import { levelPaths } from "../../src/config/level-layout.js";
import { silentLogger, createLogger } from "../../src/log/logger.js";
import { procTimes } from "./proc-cpu.js";

const self = fileURLToPath(import.meta.url);

export interface ChildArgs { host: string; port: number; fp: string; key: string; names: string[]; root: string; divertMinObjects?: number }
/** cpuMs: the fetcher's own user+sys; gitCpuMs: that of the git processes it ran for the sync (index-pack, status, read-tree). */
export interface ChildResult { ms: number; cpuMs: number; gitCpuMs: number; bytes: number; maxRssMiB: number }

/**
 * The fetching level, as a long-lived process like the hsd daemon: one sync
 * per "sync" line on stdin, one JSON result line each. Peak RSS is the
 * process's max so far.
 */
async function child(args: ChildArgs): Promise<void> {
  const p = levelPaths(args.root);
  const log = process.env.HSD_BENCH_LOG ? createLogger({ level: process.env.HSD_BENCH_LOG, destination: pino.destination(2) }) : silentLogger();
  const { createInterface } = await import("node:readline");
  // As the daemon does (src/level/git-repo-ops.ts).
  const refresher = new IndexRefresher(log);
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() !== "sync") continue;
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const g0 = procTimes("self").childrenMs;
    const res = await syncFromParent({
      parent: { host: args.host, port: args.port, hostKeyFingerprint: args.fp }, userKeyPath: args.key,
      repoNames: args.names, exportsDir: p.reposDir, workDir: p.workDir, connectTimeoutMs: 10_000,
      commandTimeoutMs: 300_000, log, refresher,
      ...(args.divertMinObjects !== undefined ? { divertMinObjects: args.divertMinObjects } : {}),
    });
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const out: ChildResult = { ms, cpuMs: (c.user + c.system) / 1000, gitCpuMs: procTimes("self").childrenMs - g0, bytes: res.bytes, maxRssMiB: process.resourceUsage().maxRSS / 1024 };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  }
  await refresher.settleAll();
}

/**
 * Drives the fetching child: each call runs one sync in it and returns the
 * result. HSD_BENCH_CHILD_FLAGS adds node flags (e.g. --cpu-prof).
 * JSON.stringify drops an Infinity divertMinObjects, so it travels as a string.
 */
export function startFetcher(a: ChildArgs): { sync: () => Promise<ChildResult>; stop: () => Promise<void> } {
  const extra = process.env.HSD_BENCH_CHILD_FLAGS ? process.env.HSD_BENCH_CHILD_FLAGS.split(" ") : [];
  const c = spawn(process.execPath, [...extra, "--import", "tsx", self, "--child", JSON.stringify(a, (_k, v) => (v === Infinity ? "Infinity" : v))], { stdio: ["pipe", "pipe", "inherit"] });
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
      const t = setTimeout(() => reject(new Error("child sync timed out")), 600_000);
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

export function runProc(cmd: string, args: string[], env?: NodeJS.ProcessEnv, cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { env: env ?? process.env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (b) => { stdout += b; });
    c.stderr.on("data", (b) => { stderr += b; });
    const t = setTimeout(() => c.kill("SIGKILL"), 600_000);
    c.on("error", reject);
    c.on("close", (code) => { clearTimeout(t); resolve({ code: code ?? -1, stdout, stderr }); });
  });
}

/**
 * Runs one git command per repo, all in parallel (as the CLI would be
 * scripted), timed inside one small driver process. maxRssMiB: the largest
 * peak RSS among them, each under GNU time, whose %M (wait4's rusage) covers
 * the git process and the children it waited for (ssh, index-pack).
 */
export async function cliAll(names: string[], action: (n: string) => string[], env: NodeJS.ProcessEnv, cwd: string): Promise<{ ms: number; maxRssMiB: number }> {
  const script = `
    const { spawn } = require("node:child_process");
    const { readFileSync } = require("node:fs");
    const jobs = JSON.parse(process.argv[1]);
    const t0 = performance.now();
    Promise.all(jobs.map((args, i) => new Promise((res, rej) => {
      const out = process.argv[2] + "/rss-" + i;
      const c = spawn("/usr/bin/time", ["-f", "%M", "-o", out, "git", ...args], { stdio: ["ignore", "ignore", "pipe"] });
      let e = ""; c.stderr.on("data", (b) => e += b);
      c.on("close", (code) => code === 0 ? res(Number(readFileSync(out, "utf8").trim().split("\\n").pop())) : rej(new Error(e)));
    }))).then((kib) => {
      console.log(JSON.stringify({ ms: performance.now() - t0, maxRssMiB: Math.max(...kib) / 1024 }));
    }, (err) => { console.error(String(err)); process.exit(1); });`;
  const r = await runProc(process.execPath, ["-e", script, JSON.stringify(names.map(action)), cwd], env, cwd);
  if (r.code !== 0) throw new Error(`git CLI failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as { ms: number; maxRssMiB: number };
}

export interface ServeArgs { root: string; names: string[]; readerKey: string }

/** The parent level's endpoint in its own process, as the hsd daemon runs it. Prints {port, fp}; exits when stdin closes. */
async function serve(a: ServeArgs): Promise<void> {
  const p0 = levelPaths(a.root);
  const keys = await loadOrCreateLevelKeys(p0.keysDir, { name: "l0" });
  const store = new AuthorizedKeyStore(p0.accessKeys, silentLogger());
  store.addStaticKey({ publicKey: a.readerKey, role: "reader" });
  const ep = await startSshEndpoint({
    host: "127.0.0.1", port: 0, hostKeyPath: keys.hostKeyPath, grpcSocketPath: p0.socket, keys: store,
    repos: resolverFor(p0.reposDir, a.names), uploadPack: gitUploadPack, maxUploadPacks: 8, queueTimeoutMs: 30_000, uploadPackTimeoutS: 120,
    authFailureDelayMs: 200, log: silentLogger(),
  });
  process.stdout.write(`${JSON.stringify({ port: ep.address().port, fp: ep.hostKeyFingerprint, hostKeyPath: keys.hostKeyPath })}\n`);
  process.stdin.resume();
  await new Promise((r) => process.stdin.once("end", r));
  await ep.close();
}

export interface Endpoint {
  port: number;
  fp: string;
  /** Environment for the git CLI over OpenSSH to this endpoint with `key`. */
  cliEnv(home: string, key: string): Promise<NodeJS.ProcessEnv>;
  stop(): Promise<void>;
}

export async function startServer(a: ServeArgs): Promise<Endpoint> {
  const c = spawn(process.execPath, ["--import", "tsx", self, "--serve", JSON.stringify(a)], { stdio: ["pipe", "pipe", "inherit"] });
  const line = await new Promise<string>((resolve, reject) => {
    let buf = "";
    const t = setTimeout(() => { c.kill("SIGKILL"); reject(new Error("endpoint did not start")); }, 30_000);
    c.stdout.on("data", (b) => { buf += b; if (buf.includes("\n")) { clearTimeout(t); resolve(buf.split("\n")[0]!); } });
    c.on("exit", (code) => { clearTimeout(t); reject(new Error(`endpoint exited ${code}`)); });
  });
  const info = JSON.parse(line) as { port: number; fp: string; hostKeyPath: string };
  return {
    port: info.port,
    fp: info.fp,
    cliEnv: async (home, key) => {
      const hostPub = ssh2.utils.parseKey(readFileSync(info.hostKeyPath));
      if (hostPub instanceof Error || Array.isArray(hostPub)) throw new Error("host key");
      const kh = join(home, "known_hosts");
      await writeFile(kh, `[127.0.0.1]:${info.port} ssh-ed25519 ${hostPub.getPublicSSH().toString("base64")}\n`);
      return {
        PATH: process.env.PATH, HOME: home, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", LC_ALL: "C",
        GIT_SSH_COMMAND: `ssh -F /dev/null -i ${key} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=${kh} -o StrictHostKeyChecking=yes -p ${info.port}`,
      };
    },
    stop: () => new Promise<void>((resolve) => {
      c.removeAllListeners("exit");
      const t = setTimeout(() => c.kill("SIGKILL"), 5_000);
      c.once("exit", () => { clearTimeout(t); resolve(); });
      c.stdin.end();
    }),
  };
}

if (process.argv[1] === self) {
  if (process.argv[2] === "--child") await child(JSON.parse(process.argv[3]!, (_k, v) => (v === "Infinity" ? Infinity : v)) as ChildArgs);
  else if (process.argv[2] === "--serve") await serve(JSON.parse(process.argv[3]!) as ServeArgs);
}
