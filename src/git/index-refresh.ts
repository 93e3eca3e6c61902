// Takes the "racily clean" re-hash that follows a large checkout off the next
// sync's path. git (built without USE_NSEC, as Debian's is) compares file and
// index mtimes in whole seconds, so every file a checkout wrote in the second
// the index was written is re-hashed by the next `git status`: ~0.2 s of CPU
// per 50 MB, paid by the first incremental sync after a full one (the git CLI
// pays it too, on the first status after a clone). Once that second has
// passed they are hashed once (clear-racy-entries.ts, about 4x faster than
// git's own; `update-index --refresh` where that declines) and the index no
// longer counts them as racy. The next checkout of the same worktree first cancels a
// refresh not yet started, or waits for a running one, so the two never write
// the index at once.
// Imported by: src/git, src/level.

import { chown, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log/logger.js";
import { runGit, worktreeGitEnv } from "./run-git.js";
import { clearRacyEntries, CLOCK_MARGIN_MS } from "./clear-racy-entries.js";

/** Below this many fetched bytes a checkout's racy re-hash costs less than the refresh's own spawn. */
export const REFRESH_MIN_BYTES = 8 << 20;

interface Pending { timer?: NodeJS.Timeout; running?: Promise<void>; done: () => void; finished: Promise<void> }

export class IndexRefresher {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly log: Logger, private readonly opts: { minBytes?: number; now?: () => number } = {}) {}

  /**
   * After a checkout of `worktree` that wrote about `bytes`: refresh its index
   * once the current second is over. Settles when that refresh has run or was
   * cancelled (by settle); never rejects.
   */
  schedule(worktree: string, bytes: number): Promise<void> {
    const had = this.pending.get(worktree);
    if (had) return had.finished;
    if (bytes < (this.opts.minBytes ?? REFRESH_MIN_BYTES)) return Promise.resolve();
    let done!: () => void;
    const finished = new Promise<void>((r) => { done = r; });
    const entry: Pending = { done, finished };
    // The index was written in this second: wait past its end (plus a margin for a coarse file clock).
    const now = (this.opts.now ?? Date.now)();
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      entry.running = this.refresh(worktree).finally(() => { this.pending.delete(worktree); done(); });
    }, 1000 - (now % 1000) + CLOCK_MARGIN_MS);
    this.pending.set(worktree, entry);
    return finished;
  }

  /** Before anything else writes `worktree`'s index: cancel its refresh if not started, else wait for it. */
  async settle(worktree: string): Promise<void> {
    const e = this.pending.get(worktree);
    if (!e) return;
    if (e.timer) {
      clearTimeout(e.timer);
      this.pending.delete(worktree);
      e.done();
      return;
    }
    await e.running;
  }

  /** Every scheduled refresh settled (cancelled or done): for shutdown. */
  async settleAll(): Promise<void> {
    await Promise.all([...this.pending.keys()].map((w) => this.settle(w)));
  }

  private async refresh(worktree: string): Promise<void> {
    const fast = await clearRacyEntries(worktree, this.opts.now).catch(() => "fallback" as const);
    if (fast !== "fallback") {
      this.log.debug({ worktree, result: fast }, "racy index entries after checkout");
      return;
    }
    const index = join(worktree, ".git", "index");
    // -q: files changed since the checkout stay changed (status reports them); only the stat data of unchanged ones is renewed.
    const r = await runGit(["update-index", "-q", "--refresh"], { cwd: worktree, env: worktreeGitEnv(worktree), allowFail: true }).catch((err: Error) => ({ code: 128, stderr: err.message }));
    if (r.code > 1) this.log.debug({ worktree, code: r.code, stderr: r.stderr.slice(0, 300) }, "index refresh after checkout failed; the next status re-hashes instead");
    // hsd writes as root; in a tree handed to the homestak user the new index is that user's, like the .git it sits in.
    if (process.getuid?.() === 0) {
      const [dir, after] = await Promise.all([stat(join(worktree, ".git")).catch(() => undefined), stat(index).catch(() => undefined)]);
      if (dir && after && (after.uid !== dir.uid || after.gid !== dir.gid)) await chown(index, dir.uid, dir.gid).catch(() => {});
    }
  }
}
