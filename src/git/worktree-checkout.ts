// Moves a level's working tree of one repo to a fetched commit, never deleting
// or overwriting an untracked or ignored file and never discarding local edits.
// The worktree is a normal repo borrowing the export's objects (alternates).
// Uses the git CLI: every level already needs it to serve upload-pack, and
// `read-tree -m -u` refuses to lose local changes or untracked files; our own
// pre-check covers ignored files and symlinks in the way.
// Imported by: src/git.

import { existsSync, lstatSync } from "node:fs";
import { writeFile, readFile, readdir, rename } from "node:fs/promises";
import { join, dirname } from "node:path";
import type { Logger } from "../log/logger.js";
import { runGit, gitList, worktreeGitEnv } from "./run-git.js";
import { initRepo } from "./init-repo.js";
import type { PendingReadTree } from "./divert-pack.js";

export interface WorktreeResult {
  readonly commit: string;
  readonly previous: string;
  readonly dirty: boolean;
  readonly dirtyFiles: readonly string[];
  /** Untracked/ignored paths the new commit would have overwritten. */
  readonly blockedBy: readonly string[];
  /** True when the worktree is not at the requested commit (dirty or blocked). */
  readonly held: boolean;
}


/**
 * lstat, synchronously on purpose: the scan does one per added path, and
 * during a sync six repos' fetches, index-packs and checkouts keep libuv's
 * threadpool busy, so an awaited lstat cost ~2 ms of queueing (iac-driver's
 * first checkout scan took ~400 ms); the syscall itself is microseconds.
 */
function pathKind(p: string): "none" | "dir" | "other" {
  try {
    const st = lstatSync(p);
    return st.isDirectory() ? "dir" : "other";
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return "none";
    return "other"; // ENOTDIR and friends: something untracked is in the way
  }
}

/**
 * Untracked or ignored things at paths the target adds: an existing file, or
 * a leading directory that is not a real directory (a symlink git would
 * replace, a file git would delete).
 */
function collisions(worktree: string, target: readonly string[], current: ReadonlySet<string>): string[] {
  const currentDirs = new Set<string>();
  for (const p of current) for (let d = dirname(p); d !== "."; d = dirname(d)) currentDirs.add(d);
  const checkedDirs = new Map<string, boolean>();
  const out: string[] = [];
  for (const p of target) {
    if (current.has(p)) continue;
    let blocked = false;
    const dirs: string[] = [];
    for (let d = dirname(p); d !== "."; d = dirname(d)) dirs.unshift(d);
    for (const d of dirs) {
      if (currentDirs.has(d)) continue;
      let bad = checkedDirs.get(d);
      if (bad === undefined) {
        const k = pathKind(join(worktree, d));
        bad = k === "other";
        checkedDirs.set(d, bad);
      }
      if (bad) { blocked = true; if (!out.includes(d)) out.push(d); break; }
    }
    if (!blocked && (pathKind(join(worktree, p))) !== "none") out.push(p);
  }
  return out;
}

/** Replaces .git/HEAD atomically with a detached commit id (we own this HEAD; no reflog is kept). */
async function writeDetachedHead(gitDir: string, commit: string): Promise<void> {
  const tmp = join(gitDir, `HEAD.${process.pid}.tmp`);
  await writeFile(tmp, `${commit}\n`);
  await rename(tmp, join(gitDir, "HEAD"));
}

/**
 * The commit HEAD names, read without a spawn: a detached id (what we
 * write), "" for a fresh repo's unborn branch, else whatever git says.
 */
async function currentHead(gitDir: string, g: (args: string[], allowFail?: boolean) => Promise<{ stdout: Buffer }>): Promise<string> {
  const headText = (await readFile(join(gitDir, "HEAD"), "utf8").catch(() => "")).trim();
  if (/^[0-9a-f]{40}$/.test(headText)) return headText;
  const sym = /^ref: (refs\/heads\/[^\s]+)$/.exec(headText)?.[1];
  if (sym && !existsSync(join(gitDir, sym)) && !existsSync(join(gitDir, "packed-refs"))) return "";
  return (await g(["rev-parse", "--verify", "-q", "HEAD^{commit}"], true)).stdout.toString().trim();
}

/**
 * Makes `worktree` a repo borrowing the export's objects, unless it is one
 * already. A sync calls it while the fetch is under way, so a new level's
 * checkout starts from a ready repo; an empty repo left by a failed fetch is
 * what the next sync would have made anyway (unborn HEAD: a first checkout).
 */
export async function prepareWorktree(worktree: string, exportGitDir: string): Promise<void> {
  const gitDir = join(worktree, ".git");
  if (existsSync(join(gitDir, "HEAD"))) return;
  // The alternates go in before HEAD: a worktree repo with HEAD is taken as complete.
  await initRepo(gitDir, { bare: false, files: { "objects/info/alternates": `${join(exportGitDir, "objects")}\n` } });
}

/**
 * A working tree no checkout has reached: an unborn HEAD and nothing but
 * .git in it, where checkoutWorktree's first checkout is a plain read-tree
 * (nothing can be in the way); a sync may then hand that read-tree to the
 * pack's index-pack process (divert-pack.ts PendingReadTree).
 */
export async function isFreshWorktree(worktree: string): Promise<boolean> {
  const gitDir = join(worktree, ".git");
  if (!existsSync(join(gitDir, "HEAD"))) return false;
  if ((await currentHead(gitDir, async () => ({ stdout: Buffer.from("unknown") }))) !== "") return false;
  return (await readdir(worktree)).every((n) => n === ".git");
}

export interface CheckoutOptions {
  worktree: string; exportGitDir: string; commit: string; log: Logger;
  /** A first checkout waiting in the pack's index-pack process: used for a fresh worktree's read-tree, else released. */
  pendingReadTree?: PendingReadTree;
  /**
   * The tree's local edits, read earlier (by a batch, worktree-status.ts) while
   * it was at `at`: used instead of a status spawn when the tree is still there.
   * read-tree -m -u still refuses to lose an edit made since.
   */
  status?: { readonly at: string; readonly dirtyFiles: readonly string[] };
}

/**
 * Spawns per call (each blocks the daemon's event loop for the fork, ~5 ms
 * per 100 MB of RSS): a fresh, empty worktree 1 (read-tree), an unchanged
 * one 1 (status), a moved one 3 (status and diff-tree at once, then read-tree);
 * one fewer each with a status read earlier.
 */
export async function checkoutWorktree(opts: CheckoutOptions): Promise<WorktreeResult> {
  try {
    return await checkout(opts);
  } finally {
    opts.pendingReadTree?.release();
  }
}

async function checkout(opts: CheckoutOptions): Promise<WorktreeResult> {
  const { worktree, commit } = opts;
  const t0 = performance.now();
  const gitDir = join(worktree, ".git");
  const ENV = worktreeGitEnv(worktree);
  const g = (args: string[], allowFail = false) => runGit(args, { cwd: worktree, env: ENV, allowFail, plainEnv: true });
  await prepareWorktree(worktree, opts.exportGitDir);
  const previous = await currentHead(gitDir, g);
  let dirtyFiles: string[] = [];
  // The move's diff is read alongside status (it only needs the two commits): one
  // spawn's latency instead of two on every incremental sync; unused if dirty.
  const moved = previous && previous !== commit
    ? gitList(["diff-tree", "-r", "-z", "--no-renames", "--name-status", previous, commit], { cwd: worktree, env: ENV, plainEnv: true })
    : undefined;
  moved?.catch(() => {}); // awaited below only when the worktree is clean
  if (previous && opts.status?.at === previous) {
    dirtyFiles = [...opts.status.dirtyFiles];
  } else if (previous) {
    // porcelain v1 -z: "XY path" records; renames are off without --find-renames in this mode.
    const st = await gitList(["status", "--porcelain=v1", "-z", "--untracked-files=no", "--no-renames"], { cwd: worktree, env: ENV, plainEnv: true });
    dirtyFiles = st.map((rec) => rec.slice(3));
  }
  const tStatus = performance.now();
  const base = { commit, previous, dirty: dirtyFiles.length > 0, dirtyFiles };
  if (previous === commit) return { ...base, blockedBy: [], held: false };
  if (dirtyFiles.length > 0) return { ...base, commit: previous, blockedBy: [], held: true };

  // The pre-check, not read-tree, is what protects untracked and ignored
  // files: git 2.38+ read-tree -m -u overwrites ignored files (the "ignored
  // file" test shows it). Only paths the new commit adds can collide. The
  // worktree is clean, so its index is exactly `previous`'s tree: the paths
  // diff-tree does not report as added are the tracked ones.
  let added: string[] = [];
  const tracked = new Set<string>();
  if (moved) {
    const rec = await moved;
    for (let i = 0; i + 1 < rec.length; i += 2) {
      if (rec[i] === "A") added.push(rec[i + 1]!);
      else tracked.add(rec[i + 1]!);
    }
  } else if ((await readdir(worktree)).some((n) => n !== ".git")) {
    // A first checkout into a directory that already has files: scan them all.
    // (Into an empty one, as on every new level, nothing can be in the way.)
    added = await gitList(["ls-tree", "-r", "-z", "--name-only", "--full-tree", commit], { cwd: worktree, env: ENV, plainEnv: true });
  }
  const tList = performance.now();
  const blockedBy = collisions(worktree, added, tracked);
  const tScan = performance.now();
  if (blockedBy.length > 0) return { ...base, commit: previous, blockedBy, held: true };

  const mergeArgs = previous ? ["read-tree", "-m", "-u", previous, commit] : ["read-tree", "-m", "-u", commit];
  // A first checkout's read-tree (same command, directory and environment) may come from the process that indexed the pack: one spawn fewer.
  const r = !previous && opts.pendingReadTree
    ? await opts.pendingReadTree.run(commit)
    : await g(mergeArgs, true);
  if (r.code !== 0) {
    // git's own safety net caught something the pre-check did not.
    opts.log.warn({ stderr: r.stderr.slice(0, 500) }, "read-tree refused to update the worktree");
    return { ...base, commit: previous, blockedBy: ["(git refused: see log)"], held: true };
  }
  await writeDetachedHead(gitDir, commit);
  opts.log.debug({ statusMs: Math.round(tStatus - t0), listMs: Math.round(tList - tStatus), scanMs: Math.round(tScan - tList), readTreeMs: Math.round(performance.now() - tScan), paths: added.length }, "worktree moved");
  return { ...base, blockedBy: [], held: false };
}
