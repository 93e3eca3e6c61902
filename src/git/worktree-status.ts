// The tracked-file edits of several working trees from one spawn: a single
// `git for-each-repo` runs `git status` in each (git forks those, a small
// process, not the daemon). Every spawn blocks the daemon's event loop for
// its fork (5-13 ms at a daemon's RSS), and a level's configure and status
// read all six trees at once.
// Imported by: src/git, src/level.

import { runGit, worktreeGitEnv } from "./run-git.js";

/** The config key for-each-repo reads its list from (set for this one call, in the environment). */
const LIST_KEY = "hsd.statusworktree";

/** The per-tree arguments: tracked-file changes only, NUL-separated, with a `## ` header that starts each tree's records. */
export const WORKTREE_STATUS_ARGS = ["status", "--porcelain=v1", "-z", "--branch", "--untracked-files=no", "--no-renames"] as const;

/**
 * Each tree's paths with local edits, in the order given; undefined when
 * the batch could not be read as a whole (a tree vanished, git failed, a
 * header is missing): the caller then asks tree by tree.
 *
 * refreshIndex: each status also writes its tree's refreshed index, as a
 * plain `git status` does. A sync that moves a tree next needs it: read-tree
 * trusts the index's stat data, and refuses every file whose data went stale
 * (a chown to the homestak user changes every ctime). Read-only callers (a
 * level's status, configure beside running steps) leave the index alone.
 */
export async function batchWorktreeStatus(worktrees: readonly string[], opts: { refreshIndex?: boolean } = {}): Promise<string[][] | undefined> {
  if (worktrees.length === 0) return [];
  // One config entry per tree, each also trusted for this call only (hsd
  // may be root in trees the homestak user owns), as worktreeGitEnv does for one.
  const env: Record<string, string> = { ...worktreeGitEnv(worktrees[0]!), ...(opts.refreshIndex ? {} : { GIT_OPTIONAL_LOCKS: "0" }) };
  const entries: [string, string][] = worktrees.flatMap((w) => [["safe.directory", w], [LIST_KEY, w]] as [string, string][]);
  env.GIT_CONFIG_COUNT = String(entries.length);
  entries.forEach(([k, v], i) => { env[`GIT_CONFIG_KEY_${i}`] = k; env[`GIT_CONFIG_VALUE_${i}`] = v; });
  // Run from / (no repository): started inside one, git would hand every tree's status that repository's GIT_DIR.
  const r = await runGit(["for-each-repo", `--config=${LIST_KEY}`, ...WORKTREE_STATUS_ARGS], { cwd: "/", env, allowFail: true });
  if (r.code !== 0) return undefined;
  return parseBatch(r.stdout.toString("utf8"), worktrees.length);
}

/** Splits the concatenated output at each tree's `## ` header; undefined unless there are exactly `count`. */
export function parseBatch(raw: string, count: number): string[][] | undefined {
  const out: string[][] = [];
  for (const rec of raw.split("\0")) {
    if (rec === "") continue;
    // A file record is "XY path" with status letters or spaces in XY: never "##".
    if (rec.startsWith("## ")) { out.push([]); continue; }
    const cur = out[out.length - 1];
    if (!cur) return undefined;
    cur.push(rec.slice(3));
  }
  return out.length === count ? out : undefined;
}
