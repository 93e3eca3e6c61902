// A child level's export refs read and written as git's loose ref files, for
// the refs a sync compares and mirrors, without isomorphic-git's per-call
// set-up (each API call binds a new fs wrapper, finds the gitdir and reads
// packed-refs): a new level's sync made ~15 such calls per repo, all on its
// one event loop. Only where there is no packed-refs (isomorphic-git and hsd
// never write one); a null answer sends the caller to isomorphic-git.
// Imported by: src/git.

import { existsSync, mkdirSync, renameSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { mkdir, readdir, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

const OID = /^[0-9a-f]{40}$/;

/**
 * Every loose ref under `prefix` ("refs/heads/", ...) naming an object, by
 * full name; symbolic refs (refs/remotes/origin/HEAD) are left out. null:
 * the repo has packed-refs, so loose files are not the whole answer.
 */
export async function looseRefs(gitdir: string, prefix: string): Promise<Map<string, string> | null> {
  if (existsSync(join(gitdir, "packed-refs"))) return null;
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    const entries = await readdir(join(gitdir, rel), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (e.name.endsWith(".lock") || /\.\d+\.tmp$/.test(e.name)) continue; // git's and writeLooseRef's temporaries
      const name = `${rel}${e.name}`;
      if (e.isDirectory()) await walk(`${name}/`);
      else {
        const text = (await readFile(join(gitdir, name), "utf8").catch(() => "")).trim();
        if (OID.test(text)) out.set(name, text);
      }
    }
  };
  await walk(prefix);
  return out;
}

/** The temporary file a ref is written to before its rename (looseRefs skips such names). */
const tempOf = (path: string): string => `${path}.${process.pid}.tmp`;

/** Writes `ref` (a full name) as a loose ref file, replaced atomically (temp file, rename). */
export async function writeLooseRef(gitdir: string, ref: string, value: string): Promise<void> {
  const path = join(gitdir, ref);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(tempOf(path), `${value}\n`);
  await rename(tempOf(path), path);
}

/**
 * writeLooseRef, synchronously: for a caller doing a few such syscalls on
 * the critical path, where each awaited one would queue behind the level's
 * other file work on libuv's threadpool (fetch-pack.ts).
 */
export function writeLooseRefSync(gitdir: string, ref: string, value: string): void {
  const path = join(gitdir, ref);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(tempOf(path), `${value}\n`);
  renameSync(tempOf(path), path);
}

export async function deleteLooseRef(gitdir: string, ref: string): Promise<void> {
  await unlink(join(gitdir, ref)).catch((err: NodeJS.ErrnoException) => { if (err.code !== "ENOENT") throw err; });
}

/**
 * Deletes `ref`'s file and the directories that leaves empty under its
 * namespace (refs/heads/...), as git's own ref deletion does: a branch
 * "a/b" gone leaves no directory "a" in the way of a branch "a".
 */
export function deleteLooseRefSync(gitdir: string, ref: string): void {
  rmSync(join(gitdir, ref), { force: true });
  for (let dir = dirname(ref); dir.split("/").length > 2; dir = dirname(dir)) {
    try { rmdirSync(join(gitdir, dir)); } catch { break; } // not empty (or gone): the rest above it stays
  }
}

/** HEAD's symbolic target ("refs/heads/main"), or undefined when HEAD is detached or unreadable. */
export async function symbolicHead(gitdir: string): Promise<string | undefined> {
  const text = (await readFile(join(gitdir, "HEAD"), "utf8").catch(() => "")).trim();
  return /^ref: (refs\/\S+)$/.exec(text)?.[1];
}

/**
 * The commit HEAD names through its branch's loose ref: "" when the branch is
 * unborn, null when packed-refs exists or HEAD is not a plain symbolic ref
 * (the caller asks isomorphic-git).
 */
export async function headCommit(gitdir: string): Promise<string | null> {
  const sym = await symbolicHead(gitdir);
  if (!sym || existsSync(join(gitdir, "packed-refs"))) return null;
  const text = (await readFile(join(gitdir, sym), "utf8").catch(() => "")).trim();
  return OID.test(text) ? text : text === "" ? "" : null;
}
