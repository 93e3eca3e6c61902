// Runs the system git CLI with a controlled environment and collects its
// output. The upload-pack server streams instead and has its own spawn in
// upload-pack.ts.
// Imported by: src/demo, src/git, src/level.

import { spawn } from "node:child_process";
import { getPriority, setPriority } from "node:os";
import { CommandFailedError, CommandTimeoutError } from "../domain/errors.js";
import { STEP_HINTS } from "../domain/hints.js";

/**
 * How long hsd waits for one local git process by default. Far above what any
 * local git command takes (a 500 MiB export's first fetch takes seconds): it
 * exists so a wedged process (a stalled disk, a stopped child) ends as a typed
 * error instead of a phase that never ends.
 */
export const LOCAL_GIT_TIMEOUT_MS = 15 * 60_000;

/** The typed error for a local git process that ran past its bound (it has been killed). */
export function localGitTimeout(what: string, timeoutMs: number): CommandTimeoutError {
  return new CommandTimeoutError(`git ${what} did not finish within ${timeoutMs} ms; it was stopped`, {
    details: { command: `git ${what}`, timeoutMs, hint: STEP_HINTS.localGitTimeout },
  });
}

export interface RunGitOptions {
  cwd?: string;
  /** Extra variables; the inherited GIT_* variables are always dropped first. */
  env?: Record<string, string>;
  /**
   * stdin. A generator is pumped chunk by chunk with a turn of the event loop
   * between chunks, so producing a large input does not stall the daemon.
   */
  input?: string | Buffer | Iterable<string>;
  /** Return non-zero exits instead of throwing. */
  allowFail?: boolean;
  /** plainGitEnv instead of the daemon's environment (hsd's own plumbing in its repos). */
  plainEnv?: boolean;
  signal?: AbortSignal;
  /** Bound on the process; past it, it is killed and the call rejects with CommandTimeout. Default LOCAL_GIT_TIMEOUT_MS. */
  timeoutMs?: number;
  /** A nice value for work nothing waits on (level 0's demo checkouts while a nest builds its first child). */
  niceness?: number;
}

/**
 * git's environment for hsd's own calls in a working tree it checked out: no
 * user or system config, and that one path trusted for this call only
 * (command-scope safe.directory) because it may belong to the homestak user
 * while hsd runs as root. git stays strict everywhere else.
 */
export function worktreeGitEnv(worktree: string): Record<string, string> {
  return {
    GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "safe.directory", GIT_CONFIG_VALUE_0: worktree,
  };
}

/**
 * A git child's whole environment for hsd's own plumbing in its repos (a
 * sync's index-pack and checkout): PATH, HOME and C messages, nothing else
 * of the daemon's. Each spawn forks the daemon and copies its environment
 * block into the child; a sync makes a dozen of them on the level's one
 * event loop, and none of these commands reads any other variable.
 */
export function plainGitEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C" };
  if (process.env.HOME) env.HOME = process.env.HOME;
  return { ...env, ...extra };
}

export interface RunGitResult { code: number; stdout: Buffer; stderr: string }

/** The caller's environment without GIT_* (a hook or a parent git could have set GIT_DIR, GIT_INDEX_FILE, ...). */
export function cleanGitEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("GIT_")) env[k] = v;
  return { ...env, LC_ALL: "C", ...extra };
}

export function runGit(args: string[], opts: RunGitOptions = {}): Promise<RunGitResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", args, {
      cwd: opts.cwd, env: opts.plainEnv ? plainGitEnv(opts.env) : cleanGitEnv(opts.env), stdio: ["pipe", "pipe", "pipe"], signal: opts.signal,
    });
    if (opts.niceness !== undefined && child.pid !== undefined) {
      // Set on the running child (spawn has no nice option); one that exited already needs none.
      // Never above the daemon's own priority (root could raise it).
      try { setPriority(child.pid, Math.max(getPriority(), opts.niceness)); } catch { /* exited */ }
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timeoutMs = opts.timeoutMs ?? LOCAL_GIT_TIMEOUT_MS;
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill("SIGKILL"); }, timeoutMs);
    timer.unref();
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.stdin.on("error", () => {}); // git may exit before reading all input
    child.on("error", (e) => { clearTimeout(timer); reject(new CommandFailedError(`git ${args[0] ?? ""} could not run`, { details: { args: args.slice(0, 3) }, cause: e })); });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (timedOut) { reject(localGitTimeout(args.find((a) => !a.startsWith("-")) ?? "", timeoutMs)); return; }
      const res = { code: code ?? 128, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString("utf8") };
      if (res.code !== 0 && !opts.allowFail) {
        reject(new CommandFailedError(`git ${args.find((a) => !a.startsWith("-")) ?? ""} failed (exit ${res.code}): ${res.stderr.trim().split("\n").slice(-2).join(" ")}`, {
          details: { exitCode: res.code },
        }));
      } else resolve(res);
    });
    const input = opts.input ?? "";
    if (typeof input === "string" || Buffer.isBuffer(input)) child.stdin.end(input);
    else void pump(child.stdin, input);
  });
}

async function pump(stdin: NodeJS.WritableStream & { destroyed: boolean }, chunks: Iterable<string>): Promise<void> {
  for (const chunk of chunks) {
    if (stdin.destroyed) return; // git exited early: its exit status tells the caller
    if (!stdin.write(chunk)) {
      await new Promise<void>((res) => {
        const done = () => { stdin.off("drain", done); stdin.off("close", done); res(); };
        stdin.on("drain", done);
        stdin.on("close", done);
      });
    }
    else await new Promise<void>((res) => setImmediate(res));
  }
  stdin.end();
}

/** stdout as trimmed text. */
export async function gitText(args: string[], opts: RunGitOptions = {}): Promise<string> {
  return (await runGit(args, opts)).stdout.toString("utf8").trim();
}

/** NUL-separated stdout as a list. */
export async function gitList(args: string[], opts: RunGitOptions = {}): Promise<string[]> {
  return (await runGit(args, opts)).stdout.toString("utf8").split("\0").filter(Boolean);
}
