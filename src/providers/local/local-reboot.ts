// A local child's reboot: the stand-in for a machine that goes down and comes
// back with hsd enabled in systemd. At install the local provider writes the
// child's boot unit (the argv it started hsd with, as a unit's ExecStart); a
// reboot stops everything the level runs (its hsd's process group, and every
// process started from its directory: hsd processes rooted under it, and the
// steps it started in groups of their own, whose HOMESTAK_ROOT lies under it),
// keeps its directory (the disk), and starts hsd from the unit again. While
// it takes the level down, a marker in the level's run directory says so (a
// machine's `systemctl is-system-running` answering `stopping`): a configure
// step it interrupts is that reboot's, not a failure (src/homestak/going-down.ts).
// The level's hsd runs it as `hsd reboot-level --root DIR`, detached, so it
// outlives what it stops; a step may run it too (a step rebooting its machine).
// Imported by: src/daemon, src/providers/local.

import { spawn } from "node:child_process";
import { open, readdir, readFile, rm } from "node:fs/promises";
import { levelPaths } from "../../config/level-layout.js";
import { writeFileAtomic } from "../../util/atomic-write.js";
import { ProviderError } from "../../domain/errors.js";
import type { Logger } from "../../log/logger.js";
import { killLevelTree, pidAlive, pidOf } from "./level-process.js";

export interface BootUnit {
  /** The command line the parent started the child's hsd with (netns and scope prefixes included). */
  readonly argv: readonly string[];
  /** The level's path from the top (its hsd's HSD_LEVEL_PATH). */
  readonly levelPath: string;
}

export function writeBootUnit(dir: string, unit: BootUnit): Promise<void> {
  return writeFileAtomic(levelPaths(dir).bootUnit, JSON.stringify(unit), { mode: 0o600 });
}

export async function readBootUnit(dir: string): Promise<BootUnit> {
  try {
    const u = JSON.parse(await readFile(levelPaths(dir).bootUnit, "utf8")) as BootUnit;
    if (!Array.isArray(u.argv) || u.argv.length === 0 || typeof u.levelPath !== "string") throw new Error("shape");
    return u;
  } catch (err) {
    throw new ProviderError(`${dir} has no valid boot unit: it was not started by a local parent`, { details: { dir }, cause: err });
  }
}

/**
 * Reboots the local level in `dir`: marks it going down, stops its hsd
 * (SIGTERM, then SIGKILL after `graceMs`, as systemd's shutdown does), then
 * every process left that was started from its directory, then starts hsd
 * again from the boot unit with the environment the level's hsd was started
 * with (the unit's; this process's own when that hsd is gone already), minus
 * the parent's readiness pipe.
 */
export async function rebootLocalLevel(dir: string, o: { graceMs: number; log: Logger; env: NodeJS.ProcessEnv }): Promise<number> {
  const unit = await readBootUnit(dir);
  const paths = levelPaths(dir);
  const unitEnv = (await startedEnv(dir)) ?? o.env;
  await writeFileAtomic(paths.goingDown, `${process.pid}\n`, { mode: 0o600 });
  await killLevelTree(dir, o.graceMs, null, o.log, { keepDir: true });
  for (const pid of await levelProcesses(dir)) {
    try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
  }
  // Down: the next boot starts clean (a machine's /run does not survive its reboot either).
  await rm(paths.goingDown, { force: true });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(unitEnv)) if (v !== undefined && k !== "HSD_READY_FD") env[k] = v;
  env.HSD_LEVEL_PATH = unit.levelPath;
  const logFh = await open(paths.log, "a", 0o600);
  const proc = spawn(unit.argv[0]!, unit.argv.slice(1), { detached: true, stdio: ["ignore", logFh.fd, logFh.fd], env });
  await logFh.close();
  proc.unref();
  if (!proc.pid) throw new ProviderError(`could not start hsd again in ${dir}`, { details: { dir } });
  o.log.info({ dir, pid: proc.pid }, "local level rebooted");
  return proc.pid;
}

/**
 * The environment the level's running hsd was started with (/proc/PID/environ:
 * as exec'd, whatever it changed since), or undefined when it does not run.
 */
async function startedEnv(dir: string): Promise<Record<string, string> | undefined> {
  const pid = await pidOf(dir);
  if (pid === undefined || !pidAlive(pid, dir)) return undefined;
  const raw = await readFile(`/proc/${pid}/environ`, "utf8").catch(() => undefined);
  if (raw === undefined) return undefined;
  const env: Record<string, string> = {};
  for (const entry of raw.split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

/**
 * Processes (other than this one) of the level in `dir` and below: an hsd whose
 * command line names a root under it, or a step whose HOMESTAK_ROOT is under it.
 * Level paths repeat across trees on one host; directories do not.
 */
async function levelProcesses(dir: string): Promise<number[]> {
  const out: number[] = [];
  const under = `${dir.replace(/\/+$/, "")}/`;
  for (const name of await readdir("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, "latin1").catch(() => "");
    const hsdHere = cmdline.split("\0").some((a) => a === dir || a.startsWith(under)) && cmdline.includes("hsd");
    const environ = hsdHere ? "" : await readFile(`/proc/${name}/environ`, "latin1").catch(() => "");
    if (hsdHere || environ.split("\0").some((e) => e.startsWith(`HOMESTAK_ROOT=${under}`))) out.push(pid);
  }
  return out;
}
