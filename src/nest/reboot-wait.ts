// The parent's half of a child's announced reboot inside configure. The child
// says `rebooting` on the configure stream, the stream ends or drops, and the
// parent polls the child's endpoint (each try bounded by the connect timeout,
// the whole wait by the phase's budget through its signal) until the child's
// hsd answers again with the same pinned host key; it then calls configure
// again, which attaches to the configure the child resumed at boot. A drop
// nobody announced stays PeerGone. Used by the configure phase hook, and by
// `hsctl sync --configure`'s wave (whose first call is a sync, then an attach).
// Imported by: src/level, src/nest.

import { CancelledError, HostKeyMismatchError, HsError, PeerGoneError, PhaseTimeoutError, errorCode } from "../domain/errors.js";
import type { EventSink, LevelEvent } from "../domain/events.js";
import type { Logger } from "../log/logger.js";
import type { ChildLink } from "./child-link.js";

/** Between two tries to reach a rebooting child (each try is bounded by the connect timeout itself). */
export const REBOOT_POLL_MS = 500;

export interface RebootAwareCall {
  /** The child's name (its events arrive with a level path of exactly [name]). */
  readonly child: string;
  /** Opens (or reuses) the link; bounded by the connect timeout. */
  readonly link: () => Promise<ChildLink>;
  /** Forgets the cached link: the next link() dials again. */
  readonly dropLink: () => Promise<void>;
  /** The call to make on the child, and to make again after each reboot. */
  readonly call: (link: ChildLink, sink: EventSink, signal: AbortSignal) => Promise<void>;
  readonly relay: EventSink;
  readonly note: (message: string) => void;
  /** Ends the wait: the phase's budget (PhaseTimeout) or a cancel. */
  readonly signal: AbortSignal;
  /**
   * When `signal` carries no configure budget (a sync wave's): the wait for the
   * child and the re-attached configure end with PhaseTimeout this long after
   * the first announcement.
   */
  readonly rebootBudgetMs?: number;
  readonly log: Logger;
  readonly now: () => number;
  readonly pollMs?: number;
}

/** Runs `call` against the child, riding out every reboot the child announces on the way; resolves with how many it rode out. */
export async function callAcrossReboots(o: RebootAwareCall): Promise<number> {
  const budget = new AbortController();
  const signal = AbortSignal.any([o.signal, budget.signal]);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await rideReboots({ ...o, signal }, () => {
      if (o.rebootBudgetMs === undefined || timer) return;
      timer = setTimeout(() => budget.abort(new PhaseTimeoutError(`${o.child} did not finish its configure within ${o.rebootBudgetMs} ms of announcing its reboot`, {
        details: { level: o.child, phase: "configure", budgetMs: o.rebootBudgetMs },
      })), o.rebootBudgetMs);
    });
  } finally {
    clearTimeout(timer);
  }
}

async function rideReboots(o: RebootAwareCall, onAnnounced: () => void): Promise<number> {
  let announced = false;
  let since = 0;
  let reboots = 0;
  for (;;) {
    let heard = false;
    let rebooting = false;
    const sink = (ev: LevelEvent) => {
      heard = true;
      if (ev.kind === "rebooting" && ev.levelPath.length === 1) rebooting = true;
      o.relay(ev);
    };
    try {
      const link = await o.link();
      await o.call(link, sink, o.signal);
      if (!rebooting) return reboots;
    } catch (err) {
      if (o.signal.aborted) throw o.signal.reason instanceof HsError ? o.signal.reason : err;
      if (err instanceof HostKeyMismatchError) throw err;
      // A drop after the announcement, or the old boot refusing while it goes down: keep waiting.
      // A drop in the middle of a configure it was running (events heard, no announcement) is the child gone.
      const waiting = rebooting || (announced && !heard);
      if (!waiting) throw err instanceof HsError ? err : new PeerGoneError(`level ${o.child} went away during configure`, { cause: err });
      o.log.debug({ code: errorCode(err) }, "child not back from its reboot yet");
    }
    if (rebooting && !announced) {
      announced = true;
      since = o.now();
      onAnnounced();
      o.note(`${o.child} is rebooting; waiting for its hsd to come back`);
    }
    if (rebooting) reboots++;
    await o.dropLink();
    await backUp(o);
    o.note(`${o.child} is back after ${Math.round((o.now() - since) / 1000)} s; re-attaching to its configure`);
  }
}

/** Waits until the child's hsd answers Identify over a fresh link (the link checks the pinned host key). */
async function backUp(o: RebootAwareCall): Promise<void> {
  for (;;) {
    await pause(o.pollMs ?? REBOOT_POLL_MS, o.signal);
    try {
      const link = await o.link();
      await link.identify();
      return;
    } catch (err) {
      if (o.signal.aborted) throw o.signal.reason instanceof HsError ? o.signal.reason : new CancelledError("wait for a reboot cancelled", { cause: err });
      if (err instanceof HostKeyMismatchError) throw err;
      await o.dropLink();
    }
  }
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => { signal.removeEventListener("abort", onAbort); resolve(); }, ms);
    const onAbort = () => { clearTimeout(t); reject(signal.reason); };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
