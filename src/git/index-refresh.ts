// Takes the "racily clean" re-hash that follows a large checkout off later
// syncs. git (built without USE_NSEC, as Debian's is) compares file and index
// mtimes in whole seconds, so every file a checkout wrote in the second the
// index was written is re-hashed by the next `git status`: ~0.2 s of CPU per
// 50 MB (the git CLI pays it too, on the first status after a clone). Once
// that second has passed they are hashed once (clear-racy-entries.ts, about
// 2.4x faster than git's own; `update-index --refresh` where that declines)
// and the index no longer counts them as racy: before the sync returns when
// they are many, else in the background. The next checkout of the same
// worktree first runs or cancels a refresh not yet started, or waits for a
// running one, so the two never write the index at once.
// Imported by: src/git, src/level.

import { chown, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log/logger.js";
import { runGit, worktreeGitEnv } from "./run-git.js";
import { clearRacyEntries, racyBytes, CLOCK_MARGIN_MS } from "./clear-racy-entries.js";

/** Below this many fetched bytes a checkout's racy re-hash costs less than the refresh's own spawn. */
export const REFRESH_MIN_BYTES = 8 << 20;

/**
 * A checkout that arrives just before the refresh would start waits for it
 * when that costs less than git re-hashing the racy files itself (git takes
 * about 1.8 ms per MiB here, the refresh under 0.8): up to this many ms per
 * MiB of racy files, never more than MAX_WAIT_MS.
 */
const WAIT_MS_PER_RACY_MIB = 0.8;
const MAX_WAIT_MS = 250;

/**
 * A checkout that leaves at least this many bytes racily clean is refreshed
 * before its sync returns: a sync arriving inside the index's second would
 * pay git's re-hash twice (its status, then read-tree's index write, about
 * 3.6 ms per MiB here), more than the wait for that second to end (at most
 * about 1 s, taken only by syncs that moved this much in their last second).
 */
export const INLINE_MIN_RACY_BYTES = 32 << 20;

/** `timer` set: not started, fires at `fireAt` (epoch ms); else `running` is the refresh. */
interface Pending { timer?: NodeJS.Timeout; fireAt: number; running?: Promise<void>; done: () => void; finished: Promise<void> }

export class IndexRefresher {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly log: Logger, private readonly opts: { minBytes?: number; inlineMinRacyBytes?: number; now?: () => number } = {}) {}

  /**
   * After a checkout of `worktree` that fetched `bytes`: refresh its index,
   * before returning when the racy files are many (INLINE_MIN_RACY_BYTES),
   * else in the background (schedule). Never rejects.
   */
  async afterCheckout(worktree: string, bytes: number): Promise<void> {
    const finished = this.schedule(worktree, bytes);
    if (bytes < (this.opts.minBytes ?? REFRESH_MIN_BYTES)) return;
    const racy = await racyBytes(worktree).catch(() => 0);
    if (racy >= (this.opts.inlineMinRacyBytes ?? INLINE_MIN_RACY_BYTES)) {
      await finished;
      this.log.debug({ worktree, racyMiB: Math.round(racy / (1 << 20)) }, "index refreshed before the sync returned");
    }
  }

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
    // The index was written in this second: wait past its end (plus a margin for a coarse file clock).
    const now = this.now();
    const delay = 1000 - (now % 1000) + CLOCK_MARGIN_MS;
    const entry: Pending = { done, finished, fireAt: now + delay };
    entry.timer = setTimeout(() => this.start(worktree, entry), delay);
    this.pending.set(worktree, entry);
    return finished;
  }

  private now(): number { return (this.opts.now ?? Date.now)(); }

  private start(worktree: string, entry: Pending): Promise<void> {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.running ??= this.refresh(worktree).finally(() => { this.pending.delete(worktree); entry.done(); });
    return entry.running;
  }

  /**
   * Before anything else writes `worktree`'s index: wait for a running
   * refresh; one about to start runs now if waiting for it is cheaper than
   * git's own re-hash, else it is cancelled.
   */
  async settle(worktree: string): Promise<void> {
    const e = this.pending.get(worktree);
    if (!e) return;
    if (e.timer) {
      const wait = e.fireAt - this.now();
      const worth = wait <= 0 || (wait <= MAX_WAIT_MS && wait <= WAIT_MS_PER_RACY_MIB * (await racyBytes(worktree)) / (1 << 20));
      if (worth && e.timer) {
        // The index's second is (nearly) over: that end is the condition waited on.
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const t0 = performance.now();
        await this.start(worktree, e);
        this.log.debug({ worktree, waitedMs: Math.max(0, Math.round(wait)), refreshMs: Math.round(performance.now() - t0) }, "checkout ran the index refresh first");
        return;
      }
    }
    if (e.timer) {
      clearTimeout(e.timer);
      this.pending.delete(worktree);
      e.done();
      this.log.debug({ worktree }, "index refresh cancelled: a checkout came first");
      return;
    }
    const t0 = performance.now();
    await e.running;
    this.log.debug({ worktree, waitedMs: Math.round(performance.now() - t0) }, "checkout waited for the index refresh");
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
