// How this level's machine reboots when a configure step asks for it
// (src/homestak/step-reboot.ts). A local child (its parent wrote it a boot
// unit) reboots through `hsd reboot-level`, detached so it outlives the level
// it stops; a system install (hsd.service, enabled) asks systemd for a reboot.
// Anything else cannot reboot: its steps are not offered the request file.
// Imported by: src/daemon.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { open } from "node:fs/promises";
import { levelPaths } from "../config/level-layout.js";
import { ProviderError } from "../domain/errors.js";
import type { Logger } from "../log/logger.js";
import type { CommandRunner } from "../util/command-runner.js";

/** `systemctl reboot` returns once the job is queued; a wedged systemd must not hold configure. */
const SYSTEMCTL_REBOOT_TIMEOUT_MS = 30_000;

export type Reboot = (reason: string) => Promise<void>;

export function levelRebooter(o: {
  /** The level's root; undefined: a system install (hsd.service). */
  readonly root: string | undefined;
  /** argv that runs this hsd (node, flags, the entry). */
  readonly hsdCommand: readonly string[];
  readonly commands: CommandRunner;
  /** Between SIGTERM and SIGKILL of the level's hsd (its shutdown grace). */
  readonly graceMs: number;
  readonly log: Logger;
}): Reboot | undefined {
  if (o.root === undefined) {
    return async (reason) => {
      o.log.warn({ reason }, "rebooting this machine (systemctl reboot)");
      await o.commands(["systemctl", "reboot"], { timeoutMs: SYSTEMCTL_REBOOT_TIMEOUT_MS, check: true, label: "systemctl reboot" });
    };
  }
  const paths = levelPaths(o.root);
  if (!existsSync(paths.bootUnit)) return undefined;
  const root = o.root;
  return async (reason) => {
    o.log.warn({ reason }, "rebooting this local level (hsd reboot-level)");
    const logFh = await open(paths.log, "a", 0o600);
    const proc = spawn(o.hsdCommand[0]!, [...o.hsdCommand.slice(1), "reboot-level", "--root", root, "--grace-ms", String(o.graceMs)], {
      detached: true, stdio: ["ignore", logFh.fd, logFh.fd],
    });
    await logFh.close();
    proc.unref();
    if (!proc.pid) throw new ProviderError("could not start hsd reboot-level", { details: { root } });
  };
}
