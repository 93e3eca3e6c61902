// Creates an empty git repository (bare export or worktree) by writing the few
// files git needs, instead of spawning `git init`.
//
// Why not `git init`: every level's first sync creates 12 repos, and a spawn
// from the daemon blocks its event loop for ~5 ms per 100 MB of RSS (fork
// copies page tables) while the other repos' fetches wait; `git init` also
// copies the sample hooks. What git requires of a repository is small and
// stable (HEAD, objects/, refs/, core.repositoryformatversion = 0); on Linux
// git's defaults for the unset core.filemode/symlinks/ignorecase are what
// `git init` would probe. Tests run `git fsck --strict` on both kinds.
// Imported by: src/demo, src/git.

import { mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** The directories a repository needs, made side by side (each makes the parents it shares with the others). */
const DIRS = [["objects", "info"], ["objects", "pack"], ["refs", "heads"], ["refs", "tags"]] as const;

export interface InitRepoOptions {
  readonly bare: boolean;
  /** The branch HEAD names; default refs/heads/main. */
  readonly head?: string;
  /** More config text after the [core] section (a remote), written with it. */
  readonly config?: string;
  /** More files, by path inside the repository (under the directories above), written before HEAD. */
  readonly files?: Readonly<Record<string, string>>;
}

/**
 * Writes `path` as a new repository (for a worktree, `path` is its .git).
 * HEAD is written last, by rename, once every other file is in place: git
 * only treats a directory with HEAD as a repository, and callers take one
 * with HEAD as complete, so a crash half way leaves something that is
 * re-initialised. Independent writes go side by side: a level's first sync
 * makes 12 repositories while its SSH handshake runs, and each await is a
 * trip through the thread pool and this level's busy event loop.
 */
export async function initRepo(path: string, opts: InitRepoOptions): Promise<void> {
  await Promise.all(DIRS.map((d) => mkdir(join(path, ...d), { recursive: true })));
  const tmp = join(path, `HEAD.${process.pid}.tmp`);
  await Promise.all([
    writeFile(join(path, "config"), `[core]\n\trepositoryformatversion = 0\n\tbare = ${opts.bare}\n${opts.config ?? ""}`),
    ...Object.entries(opts.files ?? {}).map(([rel, text]) => writeFile(join(path, rel), text)),
    writeFile(tmp, `ref: ${opts.head ?? "refs/heads/main"}\n`),
  ]);
  await rename(tmp, join(path, "HEAD"));
}
