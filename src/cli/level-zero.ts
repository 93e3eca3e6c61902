// Starts a level-0 hsd for the current user when hsctl nest finds none: root
// $HSD_ROOT (default ./.hsd), in the background, its log in the root. If it
// cannot start, the error is the daemon's own (from its ready pipe). `hsctl
// destroy` stops it again.
// Imported by: src/cli/commands.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, open, access, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { resolve } from "node:path";
import { levelPaths } from "../config/level-layout.js";
import { writeFileAtomic } from "../util/atomic-write.js";
import { readLogTail, readyFromPipe, type StartFailure } from "../util/ready-pipe.js";
import { withTimeout } from "../util/timeout.js";
import { DaemonStartError, ProviderError } from "../domain/errors.js";
import { hintFor } from "../domain/hints.js";

/** The root hsctl uses when nothing else names one. */
export function defaultUserRoot(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.HSD_ROOT || ".hsd");
}

const USER_L0_CONFIG = `# Level-0 hsd started by hsctl for this user (edit freely; see daemon/hsd.example.yaml).
level:
  name: l0
ssh:
  # 0.0.0.0 so netns children can reach it through their veth.
  # Key authentication only: nothing is served to an unknown key.
  host: 0.0.0.0
  # Unset: a free port, the same one across restarts while it stays free.
  # port: 2222
  advertise_host: 127.0.0.1
`;

export interface StartLevelZeroOptions {
  readonly timeoutMs?: number;
  /**
   * Work for this process while the daemon boots (hsctl loads its clients),
   * begun once it is spawned; its failure is left to whoever uses that work.
   */
  readonly whileStarting?: () => Promise<unknown>;
}

/**
 * Starts hsd on `root` and resolves once it serves. If it exits first, throws
 * DaemonStartError with the daemon's own code, message and hint; if it is not
 * ready within `timeoutMs`, stops it and throws DaemonStartFailed. Either hint names the log.
 */
export async function startUserLevelZero(root: string, o: StartLevelZeroOptions = {}): Promise<{ socket: string; log: string }> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  const paths = levelPaths(root);
  await mkdir(root, { recursive: true, mode: 0o700 });
  if (!(await access(paths.config).then(() => true, () => false))) {
    await writeFileAtomic(paths.config, USER_L0_CONFIG, { mode: 0o600 });
  }
  const hsd = fileURLToPath(new URL("../daemon/hsd.js", import.meta.url));
  const logFh = await open(paths.log, "a", 0o600);
  const proc = spawn(process.execPath, [hsd, "run", "--root", root], {
    detached: true,
    stdio: ["ignore", logFh.fd, logFh.fd, "pipe"],
    env: { ...process.env, HSD_READY_FD: "3", HSD_LOG_PRETTY: "" },
  });
  await logFh.close();
  proc.unref();
  const meanwhile = o.whileStarting?.().catch(() => undefined);
  const ac = new AbortController();
  try {
    await withTimeout(timeoutMs, () => new DaemonStartError(`it was not ready within ${timeoutMs / 1000}s`),
      (sig) => readyFromPipe(proc, sig, () => readLogTail(paths.log)), ac.signal);
  } catch (err) {
    const failure = err instanceof ProviderError ? (err.details.failure as StartFailure | undefined) : undefined;
    // Nothing half-started is left behind, and hsctl returns only once the daemon is gone:
    // one that reported its failure is exiting by itself; one still starting after the timeout is stopped.
    await settleFailedStart(proc, err instanceof DaemonStartError);
    const why = failure?.message ?? (err as Error).message;
    throw new DaemonStartError(`the level-0 hsd at ${root} could not start: ${why}`, {
      ...(failure ? { reportedCode: failure.code } : {}),
      details: {
        root, log: paths.log,
        hint: `${failure?.hint ?? hintFor("DaemonStartFailed")}; its log: ${paths.log}`,
        ...(failure?.details ? { daemon: failure.details } : {}),
      },
      cause: err,
    });
  }
  await meanwhile;
  return { socket: paths.socket, log: paths.log };
}

/** How long a failed level 0 gets to exit at each step (by itself or after SIGTERM) before the next. */
const FAILED_START_GRACE_MS = 5000;

/**
 * Waits until a level 0 that failed to start has exited: first by itself
 * (it reported its failure and is on its way out), unless it is still
 * starting (`stillStarting`: the ready wait timed out), then after SIGTERM,
 * then after SIGKILL to its process group; each step bounded.
 */
async function settleFailedStart(proc: ChildProcess, stillStarting: boolean): Promise<void> {
  const gone = () => !proc.pid || proc.exitCode !== null || proc.signalCode !== null;
  if (gone()) return;
  const exited = new Promise<true>((r) => proc.once("exit", () => r(true)));
  const wait = (ms: number) => {
    let t: NodeJS.Timeout | undefined;
    return Promise.race([exited, new Promise<false>((r) => { t = setTimeout(() => r(false), ms); })]).finally(() => clearTimeout(t));
  };
  if (!stillStarting && (await wait(FAILED_START_GRACE_MS))) return;
  for (const sig of ["SIGTERM", "SIGKILL"] as const) {
    if (gone()) return;
    try { process.kill(-proc.pid!, sig); } catch { return; /* already gone */ }
    if (await wait(FAILED_START_GRACE_MS)) return;
  }
}

/** The pid the user's level-0 hsd announced in its ready.json; undefined when there is none. */
export async function userLevelZeroPid(root: string): Promise<number | undefined> {
  const text = await readFile(levelPaths(root).ready, "utf8").catch(() => "");
  const pid = Number((JSON.parse(text || "{}") as { pid?: unknown }).pid);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Resolves true once `pid` has exited, false if it still runs after `ms`.
 * Not our child, so there is no exit event to wait on: a 20 ms poll, bounded.
 */
export async function waitForExit(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    try { process.kill(pid, 0); } catch { return true; }
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}
