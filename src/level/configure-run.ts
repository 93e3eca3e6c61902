// A configure nobody asked for yet: the one a level resumes by itself after
// its own reboot. It runs from boot, and the parent, once it has reconnected,
// attaches to it: the events so far (a bounded backlog; older ones are counted,
// not kept) and then the live ones, and the run's end as its own. A run that
// ended before anyone attached keeps its end for the first caller.
// Imported by: src/level.

import type { EventSink, LevelEvent } from "../domain/events.js";
import { CancelledError } from "../domain/errors.js";

/** Events kept for a late caller; the rest of a longer run is counted in one note. */
export const CONFIGURE_BACKLOG = 256;

export class ConfigureRun {
  private readonly backlog: LevelEvent[] = [];
  private dropped = 0;
  private readonly sinks = new Set<EventSink>();
  private readonly done: Promise<void>;
  /** Settled and heard by a caller: nothing is left to hand on. */
  claimed = false;
  settled = false;

  /** `body` gets the run's own sink (fan-out plus backlog). */
  constructor(body: (sink: EventSink) => Promise<void>, private readonly max = CONFIGURE_BACKLOG) {
    this.done = body((ev) => this.publish(ev));
    this.done.then(() => { this.settled = true; }, () => { this.settled = true; });
  }

  /**
   * Replays the backlog into `sink`, then passes on every new event until the
   * run ends; resolves or rejects as the run does. An abort of `signal` stops
   * this caller's view only (the run goes on; the next caller may attach).
   */
  attach(sink: EventSink, signal: AbortSignal): Promise<void> {
    const first = this.backlog[0];
    if (this.dropped > 0 && first) {
      sink({ ...first, kind: "log", message: `${this.dropped} earlier events of this configure were not kept`, durationMs: undefined, failure: undefined });
    }
    for (const ev of this.backlog) sink(ev);
    this.sinks.add(sink);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.sinks.delete(sink);
        reject(signal.reason ?? new CancelledError("configure attach cancelled"));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      // Claimed before this caller hears the end: a configure call right after must not attach to it again.
      const settle = () => {
        signal.removeEventListener("abort", onAbort);
        this.sinks.delete(sink);
        if (!signal.aborted) this.claimed = true;
      };
      this.done.then(() => { settle(); resolve(); }, (err: unknown) => { settle(); reject(err); });
    });
  }

  private publish(ev: LevelEvent): void {
    this.backlog.push(ev);
    if (this.backlog.length > this.max) { this.backlog.shift(); this.dropped++; }
    for (const s of this.sinks) s(ev);
  }
}
