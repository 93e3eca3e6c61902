// A unix socket path longer than sun_path (108 bytes with its NUL) can be
// neither bound nor connected, and a nested level's socket is
// <cwd>/.hsd/state/levels/l1/.../l3/run/hsd.sock: a clone in a deep directory
// crosses the limit at level 3. Such a path is reached through an open
// descriptor of its directory instead (/proc/self/fd/N/name, which the kernel
// resolves), so the socket still lives where the config says. Linux only, as
// hsd is.
// Imported by: anyone.

import { closeSync, constants, fstatSync, openSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";

/** sun_path holds 108 bytes including the terminating NUL. */
const SUN_PATH_MAX = 107;

/** Directory -> descriptor kept open for the life of the process (libuv opens with O_CLOEXEC: children do not inherit it). */
const dirFds = new Map<string, number>();

function sameInode(fd: number, dir: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = statSync(dir);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/**
 * The path to hand to bind/connect for the socket at `path`: itself when it
 * fits, else the same socket through a descriptor of its directory. When the
 * directory cannot be opened the path is returned unchanged and the
 * bind/connect reports the failure.
 */
export function reachableSocketPath(path: string): string {
  if (Buffer.byteLength(path) <= SUN_PATH_MAX) return path;
  const dir = dirname(path);
  let fd = dirFds.get(dir);
  // The directory may have been removed and made again since (a level rebuilt).
  if (fd !== undefined && !sameInode(fd, dir)) {
    closeSync(fd);
    dirFds.delete(dir);
    fd = undefined;
  }
  if (fd === undefined) {
    try {
      fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    } catch {
      return path;
    }
    dirFds.set(dir, fd);
  }
  return `/proc/self/fd/${fd}/${basename(path)}`;
}
