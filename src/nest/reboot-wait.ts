// The parent's half of a child's announced reboot inside configure. The child
// says `rebooting` on the configure stream, the stream ends or drops, and the
// parent polls the child's endpoint (each try bounded by the connect timeout,
// the whole wait by the phase's budget through its signal) until the child's
// hsd answers again with the same pinned host key; it then calls configure
// again, which attaches to the configure the child resumed at boot. A drop
// nobody announced stays PeerGone. Used by the configure phase hook.
// Imported by: src/nest.

import { CancelledError, HostKeyMismatchError, HsError, PeerGoneError, errorCode } from "../domain/errors.js";
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
  readonly log: Logger;
  readonly now: () => number;
  readonly pollMs?: number;
}

/** Runs `call` against the child, riding out every reboot the child announces on the way. */
export async function callAcrossReboots(o: RebootAwareCall): Promise<void> {
  let announced = false;
  let since = 0;
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
      if (!rebooting) return;
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
      o.note(`${o.child} is rebooting; waiting for its hsd to come back`);
    }
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
