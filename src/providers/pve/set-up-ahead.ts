// A configure's work begun before configure is asked for (a fresh PVE level's
// set-up, then its template, begun at its parent's handshake): its lines are
// held until the configure joins it, then handed over in order and followed
// live, and from then on the configure's signal ends it too. The configure
// takes the outcome instead of doing the work again.
// Imported by: src/providers/pve.

import type { LocalEvent } from "../../domain/events.js";

type Emit = (ev: LocalEvent) => void;

export interface Ahead<R> {
  /** Settles when all of the work has (never rejects). */
  readonly settled: Promise<void>;
  /**
   * Hands the lines to `emit` (those so far first) and ties the work to `signal`.
   * `first`: the first part's outcome; `then`: the second part's (true: done;
   * false: it did not run, the caller does it).
   */
  join(emit: Emit, signal: AbortSignal): { first: Promise<R>; then: Promise<boolean> };
}

/**
 * Runs `first`, then `then` with its outcome. Both get the same held emit and
 * a signal ended by `signal` or by the joining configure's; `then` also gets
 * `joined`, settled once a configure has joined (nothing comes before it then).
 */
export function beginAhead<R>(
  signal: AbortSignal,
  first: (emit: Emit, signal: AbortSignal) => Promise<R>,
  then: (r: R, emit: Emit, signal: AbortSignal, joined: Promise<void>) => Promise<boolean>,
): Ahead<R> {
  const held: LocalEvent[] = [];
  let out: Emit | undefined;
  const emit: Emit = (ev) => { if (out) out(ev); else held.push(ev); };
  const stop = new AbortController();
  let onJoin!: () => void;
  const joined = new Promise<void>((r) => { onJoin = r; });
  const sig = AbortSignal.any([signal, stop.signal]);
  const f = first(emit, sig);
  const t = f.then((r) => then(r, emit, sig, joined));
  // Either is awaited by the configure that joins; with none, a failure has nobody to tell.
  f.catch(() => {});
  t.catch(() => {});
  return {
    settled: t.then(() => undefined, () => undefined),
    join(into, joinSignal) {
      for (const ev of held.splice(0)) into(ev);
      out = into;
      onJoin();
      if (joinSignal.aborted) stop.abort(joinSignal.reason);
      else joinSignal.addEventListener("abort", () => stop.abort(joinSignal.reason), { once: true });
      return { first: f, then: t };
    },
  };
}
