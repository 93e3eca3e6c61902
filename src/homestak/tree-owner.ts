// Who owns a level's homestak trees and site-config files (homestak.user):
// resolves the user and hands a tree to it after hsd (root) wrote into it.
// Level 0's checkouts are the operator's and never pass through here.
// Imported by: src/homestak, src/level, src/daemon.

import { lchown, lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import { lookupUser } from "../util/passwd.js";

export interface TreeOwner { readonly name: string; readonly uid: number; readonly gid: number; readonly home: string }

/** homestak.user's passwd entry (the loader checked it exists); undefined when hsd's own user owns the trees. */
export function treeOwner(user: string | null, lookup: (name: string) => TreeOwner | undefined = lookupUser): TreeOwner | undefined {
  return user ? lookup(user) : undefined;
}

/**
 * Gives `path` and everything under it (symlinks themselves, never their
 * targets) to `owner`; entries already its own are left alone, so a re-sync
 * touches only what hsd wrote since. A missing path is nothing to own.
 */
export async function ownTree(path: string, owner: TreeOwner): Promise<number> {
  let changed = 0;
  const stack = [path];
  while (stack.length > 0) {
    const p = stack.pop()!;
    const st = await lstat(p).catch((err: NodeJS.ErrnoException) => { if (err.code === "ENOENT") return undefined; throw err; });
    if (!st) continue;
    if (st.uid !== owner.uid || st.gid !== owner.gid) { await lchown(p, owner.uid, owner.gid); changed++; }
    if (st.isDirectory()) for (const e of await readdir(p)) stack.push(join(p, e));
  }
  return changed;
}
