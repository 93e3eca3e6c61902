// The real answers to "is this machine going down?" (src/homestak/going-down.ts):
// on systemd, `systemctl is-system-running` says `stopping`, or a job for a
// shutdown target (reboot, poweroff, halt, kexec) is queued; a local child is
// going down while `hsd reboot-level` (its stand-in for a machine's reboot)
// holds the marker in its run directory. Picked by the daemon's wiring for a
// level that can reboot, the same way its rebooter is.
// Imported by: src/daemon.

import { access } from "node:fs/promises";
import { levelPaths } from "../config/level-layout.js";
import type { GoingDownProbe } from "../homestak/going-down.js";
import type { CommandRunner } from "../util/command-runner.js";

/** Units whose queued start job means the machine is on its way down. */
const SHUTDOWN_TARGETS = new Set(["shutdown.target", "reboot.target", "poweroff.target", "halt.target", "kexec.target"]);

/**
 * systemd's view. Both questions at once, each bounded by `timeoutMs`; an
 * error or a timeout of one is no answer from it (the other may still say yes).
 */
export function systemdGoingDown(commands: CommandRunner, timeoutMs: number): GoingDownProbe {
  const ask = (argv: string[], label: string) => commands(argv, { timeoutMs, label }).then((r) => r.stdout, () => "");
  return async () => {
    // is-system-running exits non-zero in every state but `running`: its output is the answer.
    const [state, jobs] = await Promise.all([
      ask(["systemctl", "is-system-running"], "systemctl is-system-running"),
      ask(["systemctl", "list-jobs", "--no-legend", "--no-pager"], "systemctl list-jobs"),
    ]);
    return state.trim() === "stopping" || shutdownJobQueued(jobs);
  };
}

/** `systemctl list-jobs --no-legend` lines: JOB UNIT TYPE STATE. */
export function shutdownJobQueued(listJobs: string): boolean {
  return listJobs.split("\n").some((line) => {
    const [, unit, type] = line.trim().split(/\s+/);
    return unit !== undefined && SHUTDOWN_TARGETS.has(unit) && type === "start";
  });
}

/** A local child: going down while its reboot's marker exists (src/providers/local/local-reboot.ts). */
export function localLevelGoingDown(root: string): GoingDownProbe {
  const marker = levelPaths(root).goingDown;
  return () => access(marker).then(() => true, () => false);
}
