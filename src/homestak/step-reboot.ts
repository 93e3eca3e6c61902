// The reboot protocol between a configure step and hsd. A step that needs the
// machine rebooted (homestak's PVE install: kernel, reboot, packages) writes a
// one-line reason to the file named by $HSD_REBOOT_REQUEST and exits 0; hsd
// journals the step as rebooting, announces it, and reboots. After the boot
// hsd runs the same step again with $HSD_STEP_REBOOTS > 0, so the step knows
// where it is. Used by the step runner.
// Imported by: src/homestak.

import { readFile, rm } from "node:fs/promises";

/** Env: the file a step writes its reboot reason to (absent: this level cannot reboot). */
export const REBOOT_REQUEST_ENV = "HSD_REBOOT_REQUEST";
/** Env: how many reboots this step has been through ("0" on its first run). */
export const STEP_REBOOTS_ENV = "HSD_STEP_REBOOTS";
/** A step asking more often than this loops: it fails instead. */
export const MAX_REBOOTS_PER_STEP = 3;
/** A reason is one short line; the rest of the file is ignored. */
const MAX_REASON = 200;

/** The step's request (its reason, never empty), removing the file; undefined when there is none. */
export async function takeRebootRequest(path: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  await clearRebootRequest(path);
  const line = (text.split("\n").find((l) => l.trim() !== "") ?? "").trim().slice(0, MAX_REASON);
  return line || "reboot requested";
}

/** Removes a stale request (a step that failed after writing one, or one from before a crash). */
export function clearRebootRequest(path: string): Promise<void> {
  return rm(path, { force: true });
}
