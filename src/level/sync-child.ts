// One child's part of a recursive sync wave (`hsctl sync`, `--configure`):
// the child syncs itself and its subtree and, with --configure, re-runs its
// configure steps. A step there may reboot the child (asked for, or the
// machine's own reboot under a step): the child announces it inside its
// configure and ends its sync there; this level then waits for its hsd to come
// back with the same pinned host key and re-attaches to the configure it
// resumed at boot, as the nest's configure phase does (src/nest/reboot-wait.ts),
// bounded by the configure budget from the announcement, and ends that
// configure for the operator. A drop nobody announced is the child gone.
// Imported by: src/level.

import { HsError, PeerGoneError, errorCode } from "../domain/errors.js";
import type { EventSink, RepoState } from "../domain/events.js";
import type { ParentRefs } from "../domain/level-api.js";
import { toFailure } from "../domain/failure.js";
import type { Logger } from "../log/logger.js";
import type { ChildLinks } from "../nest/child-link.js";
import type { ChildScope } from "../nest/child-tree.js";
import type { ChildRecord } from "../nest/journal.js";
import { callAcrossReboots } from "../nest/reboot-wait.js";

export interface SyncChildRun {
  readonly rec: ChildRecord;
  readonly at: ChildScope;
  readonly links: ChildLinks;
  readonly configure: boolean;
  /** budgets.configure: how long after its announced reboot the child has to finish its configure. */
  readonly configureBudgetMs: number;
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly now: () => number;
  /** What this level serves now, sent with the sync (undefined: the child asks for every repo). */
  readonly parentRefs: ParentRefs | undefined;
  /** What the child last reported of its repos, kept for status when it cannot answer. */
  readonly remember: (repos: RepoState[]) => Promise<void>;
}

export async function syncChild(o: SyncChildRun): Promise<void> {
  const { rec, at } = o;
  let reported: RepoState[] | undefined;
  let configureStarted: number | undefined;
  let rebooted = false;
  const relay: EventSink = (ev) => {
    if (ev.levelPath.length === 1 && ev.repos && ev.repos.length > 0 && (ev.kind === "finished" || ev.kind === "failed")) reported = [...ev.repos];
    if (ev.levelPath.length === 1 && ev.phase === "configure" && ev.kind === "started") configureStarted = o.now();
    if (ev.levelPath.length === 1 && ev.kind === "rebooting") rebooted = true;
    at.relay(ev);
  };
  try {
    let calls = 0;
    // The first call is the sync; after a reboot the child's configure is attached to (its sync of this wave ended with the reboot).
    await callAcrossReboots({
      child: rec.name, relay, signal: o.signal, log: o.log, now: o.now,
      link: () => o.links.get(rec.name, rec.endpoint!, o.signal), dropLink: () => o.links.drop(rec.name),
      call: (link, sink, signal) => calls++ === 0
        ? link.sync({ recursive: true, configure: o.configure, ...(o.parentRefs ? { parentRefs: o.parentRefs } : {}) }, sink, signal)
        : link.configure(sink, signal),
      note: (message) => at.emit({ phase: "configure", kind: "log", message }),
      rebootBudgetMs: o.configureBudgetMs,
    });
    if (rebooted) {
      at.emit({ phase: "configure", kind: "finished", durationMs: o.now() - (configureStarted ?? o.now()), budgetMs: o.configureBudgetMs });
      at.emit({ phase: "sync", kind: "log", message: `${rec.name}'s subtree was not synced in this wave (it rebooted during its configure); run hsctl sync again to reach it` });
    }
    if (reported) await o.remember(reported).catch((e: unknown) => o.log.warn({ err: e, child: rec.name }, "journal write failed"));
  } catch (err) {
    await o.links.drop(rec.name);
    if (rebooted) {
      // The child went down as it announced: what failed is its configure after the reboot.
      at.emit({ phase: "configure", kind: "failed", durationMs: o.now() - (configureStarted ?? o.now()), budgetMs: o.configureBudgetMs, failure: toFailure(err) });
      o.log.warn({ child: rec.name, code: errorCode(err) }, "child's configure after its reboot failed");
      return;
    }
    const failure = toFailure(err instanceof HsError ? err : new PeerGoneError(`level ${rec.name} did not answer`, { cause: err }));
    at.emit({ phase: "sync", kind: "failed", failure: { ...failure, message: `${failure.message} (subtree of ${rec.name} is stale)` } });
    o.log.warn({ child: rec.name, code: errorCode(err) }, "child sync failed; subtree stale");
  }
}
