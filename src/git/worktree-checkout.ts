// Moves a level's working tree of one repo to a fetched commit, never
// deleting or overwriting an untracked or ignored file and never discarding
// local edits. The worktree is a normal repo borrowing the export's objects
// (alternates). Uses the git CLI: every level already needs it to serve
// upload-pack, and `read-tree -m -u` has git's exact safety checks (without
// --exclude-per-directory it protects ignored files too). Imported by
// sync-from-parent.ts and tests.

import { existsSync } from "node:fs";
import { lstat, mkdir, writeFile, readFile } from "node:fs/promises";
import { join, dirname } from "node:path";
import type { Logger } from "../log/logger.js";
import { runGit, gitList } from "./run-git.js";

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

const ENV = { GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1" };

async function pathKind(p: string): Promise<"none" | "dir" | "other"> {
  try {
    const st = await lstat(p);
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
async function collisions(worktree: string, target: readonly string[], current: ReadonlySet<string>): Promise<string[]> {
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
        const k = await pathKind(join(worktree, d));
        bad = k === "other";
        checkedDirs.set(d, bad);
      }
      if (bad) { blocked = true; if (!out.includes(d)) out.push(d); break; }
    }
    if (!blocked && (await pathKind(join(worktree, p))) !== "none") out.push(p);
  }
  return out;
}

export async function checkoutWorktree(opts: { worktree: string; exportGitDir: string; commit: string; log: Logger }): Promise<WorktreeResult> {
  const { worktree, commit } = opts;
  const g = (args: string[], allowFail = false) => runGit(args, { cwd: worktree, env: ENV, allowFail });
  if (!existsSync(join(worktree, ".git"))) {
    await mkdir(worktree, { recursive: true });
    await runGit(["init", "-q", worktree], { env: ENV });
    await writeFile(join(worktree, ".git", "objects", "info", "alternates"), `${join(opts.exportGitDir, "objects")}\n`);
  }
  // We own this repo's HEAD (always detached at a commit id): read it without a spawn.
  const headText = (await readFile(join(worktree, ".git", "HEAD"), "utf8").catch(() => "")).trim();
  const previous = /^[0-9a-f]{40}$/.test(headText)
    ? headText
    : (await g(["rev-parse", "--verify", "-q", "HEAD^{commit}"], true)).stdout.toString().trim();
  let dirtyFiles: string[] = [];
  if (previous) {
    // porcelain v1 -z: "XY path" records; renames are off without --find-renames in this mode.
    const st = await gitList(["status", "--porcelain=v1", "-z", "--untracked-files=no", "--no-renames"], { cwd: worktree, env: ENV });
    dirtyFiles = st.map((rec) => rec.slice(3));
  }
  const base = { commit, previous, dirty: dirtyFiles.length > 0, dirtyFiles };
  if (previous === commit) return { ...base, blockedBy: [], held: false };
  if (dirtyFiles.length > 0) return { ...base, commit: previous, blockedBy: [], held: true };

  const target = await gitList(["ls-tree", "-r", "-z", "--name-only", "--full-tree", commit], { cwd: worktree, env: ENV });
  const current = new Set(previous ? await gitList(["ls-files", "-z", "--cached"], { cwd: worktree, env: ENV }) : []);
  const blockedBy = await collisions(worktree, target, current);
  if (blockedBy.length > 0) return { ...base, commit: previous, blockedBy, held: true };

  const mergeArgs = previous ? ["read-tree", "-m", "-u", previous, commit] : ["read-tree", "-m", "-u", commit];
  const r = await g(mergeArgs, true);
  if (r.code !== 0) {
    // git's own safety net caught something the pre-check did not.
    opts.log.warn({ stderr: r.stderr.slice(0, 500) }, "read-tree refused to update the worktree");
    return { ...base, commit: previous, blockedBy: ["(git refused: see log)"], held: true };
  }
  await g(["update-ref", "--no-deref", "-m", "hsd sync", "HEAD", commit]);
  return { ...base, blockedBy: [], held: false };
}
