// Crash-safe file writes: temp file in the same directory, fsync, rename,
// fsync of the directory. Readers see the old or the new file, never a torn one.
// Used by every module that persists state or secrets.

import { open, rename, unlink, mkdir } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import { randomBytes } from "node:crypto";
import { DiskFullError } from "../errors/hs-error.js";

export interface AtomicWriteOptions {
  /** File mode; state and secrets are 0600 by default. */
  mode?: number;
  /** Test hook, called after the temp file is synced and before the rename. */
  beforeRename?: (tmpPath: string) => Promise<void> | void;
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
