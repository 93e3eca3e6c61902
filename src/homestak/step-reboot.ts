// The reboot protocol between a configure step and hsd. A step that needs the
// machine rebooted (homestak's PVE install: kernel, reboot, packages) writes a
// one-line reason to the file named by $HSD_REBOOT_REQUEST and exits 0; hsd
// journals the step as rebooting, announces it, and reboots. After the boot
// hsd runs the same step again with $HSD_STEP_REBOOTS > 0, so the step knows
// where it is. Used by the step runner.
// Imported by: src/homestak.

import { chown, mkdtemp, open, rm } from "node:fs/promises";
import { constants } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Env: the file a step writes its reboot reason to (absent: this level cannot reboot). */
export const REBOOT_REQUEST_ENV = "HSD_REBOOT_REQUEST";
/** Env: how many reboots this step has been through ("0" on its first run). */
export const STEP_REBOOTS_ENV = "HSD_STEP_REBOOTS";
/** A step asking more often than this loops: it fails instead. */
export const MAX_REBOOTS_PER_STEP = 3;
/** A reason is one short line; the rest of the file is ignored (and never read past this). */
const MAX_REASON = 200;
const READ_MAX = 4096;

/**
 * The step's request (its reason, never empty), removing the file; undefined
 * when there is none. Never follows a symlink and reads only a regular file, a
 * bounded amount: a step running as another user owns the directory it is in.
 */
export async function takeRebootRequest(path: string): Promise<string | undefined> {
  let text: string;
  try {
    const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      if (!(await fh.stat()).isFile()) text = "";
      else {
        const buf = Buffer.alloc(READ_MAX);
        const { bytesRead } = await fh.read(buf, 0, READ_MAX, 0);
        text = buf.subarray(0, bytesRead).toString("utf8");
      }
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    if ((err as NodeJS.ErrnoException).code === "ELOOP") text = "";
    else throw err;
  }
  await clearRebootRequest(path);
  const line = (text.split("\n").find((l) => l.trim() !== "") ?? "").trim().slice(0, MAX_REASON);
  return line || "reboot requested";
}

/**
 * Where a step writes its request: the level's own path for a step run as
 * hsd's user; for a step run as another user (its `user:`), a fresh directory
 * of that user's (hsd's run directory is not theirs to reach), removed after.
 */
export async function rebootRequestFor(levelPath: string, user: { uid: number; gid: number } | undefined): Promise<{ path: string; done: () => Promise<void> }> {
  if (!user) {
    await clearRebootRequest(levelPath);
    return { path: levelPath, done: async () => {} };
  }
  const dir = await mkdtemp(join(tmpdir(), "hsd-step-reboot-"));
  await chown(dir, user.uid, user.gid);
  return { path: join(dir, "request"), done: () => rm(dir, { recursive: true, force: true }) };
}

/** Removes a stale request (a step that failed after writing one, or one from before a crash). */
export function clearRebootRequest(path: string): Promise<void> {
  return rm(path, { force: true });
}
