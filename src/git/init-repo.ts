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

/**
 * Writes `path` as a new repository (for a worktree, `path` is its .git).
 * HEAD (a symref to `head`, default refs/heads/main) is written last, by
 * rename: git only treats a directory with HEAD as a repository, so a crash
 * half way leaves something that is re-initialised.
 */
export async function initRepo(path: string, opts: { bare: boolean; head?: string }): Promise<void> {
  await mkdir(join(path, "objects", "info"), { recursive: true });
  await mkdir(join(path, "objects", "pack"), { recursive: true });
  await mkdir(join(path, "refs", "heads"), { recursive: true });
  await mkdir(join(path, "refs", "tags"), { recursive: true });
  await writeFile(join(path, "config"), `[core]\n\trepositoryformatversion = 0\n\tbare = ${opts.bare}\n`);
  const tmp = join(path, `HEAD.${process.pid}.tmp`);
  await writeFile(tmp, `ref: ${opts.head ?? "refs/heads/main"}\n`);
  await rename(tmp, join(path, "HEAD"));
}
