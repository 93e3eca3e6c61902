// Crash-safe file writes: temp file in the same directory, fsync, rename, fsync
// of the directory. Readers see the old or the new file, never a torn one.
// cleanStaleTemps removes the temp files a killed write left behind (the daemon
// wiring calls it at startup).
// Imported by: anyone.

import { open, rename, unlink, mkdir, readdir } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import { randomBytes } from "node:crypto";
import { DiskFullError } from "../domain/errors.js";

export interface AtomicWriteOptions {
  /** File mode; state and secrets are 0600 by default. */
  mode?: number;
  /** Owner of the new file, set on the temp file so the name never points at a file of the wrong owner. */
  owner?: { uid: number; gid: number };
  /** Test hook, called after the temp file is synced and before the rename. */
  beforeRename?: (tmpPath: string) => Promise<void> | void;
}

/** The temp name writeFileAtomic uses for `name`: `.<name>.<12 hex>.tmp`. */
const TEMP_RE = /^\..+\.[0-9a-f]{12}\.tmp$/;

/**
 * Removes the temp files of writes killed before their rename in `dir` (not
 * recursive). Only this level's process writes there, so call it at startup,
 * before any write begins. A missing dir is nothing to clean. Returns the names removed.
 */
export async function cleanStaleTemps(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT" || err.code === "ENOTDIR") return [];
    throw err;
  });
  const removed: string[] = [];
  for (const e of entries) {
    if (!e.isFile() || !TEMP_RE.test(e.name)) continue;
    await unlink(join(dir, e.name)).then(() => removed.push(e.name), (err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err;
    });
  }
  return removed;
}

export async function writeFileAtomic(path: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const mode = opts.mode ?? 0o600;
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  let fh;
  try {
    fh = await open(tmp, "wx", mode);
    await fh.writeFile(data);
    await fh.chmod(mode); // umask may have narrowed or widened it
    if (opts.owner) await fh.chown(opts.owner.uid, opts.owner.gid);
    await fh.sync();
    await fh.close();
    fh = undefined;
    if (opts.beforeRename) await opts.beforeRename(tmp);
    await rename(tmp, path);
  } catch (err) {
    if (fh) await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    if ((err as NodeJS.ErrnoException).code === "ENOSPC") {
      throw new DiskFullError("no space left to write state file", { details: { path }, cause: err });
    }
    throw err;
  }
  const dh = await open(dir, "r").catch(() => undefined);
  if (dh) {
    await dh.sync().catch(() => {});
    await dh.close();
  }
}
