// Stopping a local level and everything below it. A level's children are
// recorded in its own journal (state/journal.json); a dead level's descendants
// are found there and stopped deepest first, so nothing is orphaned even when a
// middle level was SIGKILLed.
// Imported by: src/cli/commands, src/providers/local.

import { readFile, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import type { Logger } from "../../log/logger.js";
import type { NetnsOps } from "./netns-ops.js";
import { levelPaths } from "../../config/level-layout.js";

interface LocalData { dir: string; pid?: number; netns?: { nsName: string } }

/** Is `pid` alive and still the hsd of `dir` (pids get reused)? */
export function pidAlive(pid: number, dir: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return cmd.includes(dir);
  } catch {
    return false;
  }
}

async function childrenOf(dir: string): Promise<LocalData[]> {
  try {
    const j = JSON.parse(await readFile(levelPaths(dir).journal, "utf8")) as {
      children?: Record<string, { handle?: { data?: LocalData } }>;
    };
    return Object.values(j.children ?? {}).map((c) => c.handle?.data).filter((d): d is LocalData => !!d?.dir);
  } catch {
    return [];
  }
}

async function waitGone(pid: number, dir: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!pidAlive(pid, dir)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return !pidAlive(pid, dir);
}

/** The pid the level's hsd wrote in its ready.json (it changes when the level restarts). */
export async function pidOf(dir: string): Promise<number | undefined> {
  try {
    const r = JSON.parse(await readFile(levelPaths(dir).ready, "utf8")) as { pid?: number };
    return r.pid;
  } catch {
    return undefined;
  }
}

/**
 * Stops the level in `dir` and all its descendants, deepest first: SIGTERM to
 * the process group, SIGKILL after `graceMs`. Removes descendants' netns and
 * directories; `dir` itself only when keepDir is false.
 */
export async function killLevelTree(dir: string, graceMs: number, netns: NetnsOps | null, log: Logger, opts: { keepDir: boolean }): Promise<void> {
  for (const child of await childrenOf(dir)) {
    await killLevelTree(child.dir, graceMs, netns, log, { keepDir: false });
    if (child.netns && netns) await netns.destroy(child.netns.nsName).catch((err) => log.warn({ err }, "netns cleanup failed"));
  }
  const pid = await pidOf(dir);
  if (pid && pidAlive(pid, dir)) {
    try { process.kill(-pid, "SIGTERM"); } catch { try { process.kill(pid, "SIGTERM"); } catch { /* gone */ } }
    if (!(await waitGone(pid, dir, graceMs))) {
      try { process.kill(-pid, "SIGKILL"); } catch { /* gone */ }
      try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
      await waitGone(pid, dir, graceMs);
    }
  }
  if (!opts.keepDir) await rm(dir, { recursive: true, force: true });
}
