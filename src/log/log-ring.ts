// The recent lines of this hsd's own log, kept in memory so `hsctl logs` can
// read any level without a file or journald: a pino destination that keeps
// the last lines (bounded by bytes) and hands new ones to followers. Lines are
// stored as written, so pino's redaction has already applied.
// Imported by: src/daemon, src/level.

import { Writable } from "node:stream";

/** One stored line: its time (epoch ms from the line's own `time`) and the JSON text. */
export interface RingLine { readonly time: number; readonly json: string }

export interface LogRingOptions {
  /** Total bytes of history kept; the oldest lines go first. */
  readonly maxBytes: number;
  /** Lines one slow follower may have pending before the oldest are dropped (and counted). */
  readonly followerLines: number;
}

export const DEFAULT_LOG_RING: LogRingOptions = { maxBytes: 2 * 1024 * 1024, followerLines: 1000 };

interface Follower { queue: RingLine[]; dropped: number; wake?: () => void }

export class LogRing {
  private lines: RingLine[] = [];
  private head = 0;
  private bytes = 0;
  private readonly followers = new Set<Follower>();
  private partial = "";

  constructor(private readonly o: LogRingOptions = DEFAULT_LOG_RING) {}

  /** A Writable for pino.multistream: whole lines in, any chunking. */
  stream(): Writable {
    return new Writable({
      write: (chunk: Buffer | string, _enc, cb) => { this.write(String(chunk)); cb(); },
    });
  }

  write(text: string): void {
    const all = this.partial + text;
    const parts = all.split("\n");
    this.partial = parts.pop() ?? "";
    if (this.partial.length > this.o.maxBytes) this.partial = "";
    for (const json of parts) if (json) this.push({ time: lineTime(json), json });
  }

  private push(line: RingLine): void {
    this.lines.push(line);
    this.bytes += line.json.length;
    while (this.bytes > this.o.maxBytes && this.head < this.lines.length - 1) {
      this.bytes -= this.lines[this.head]!.json.length;
      this.head++;
    }
    // Compact now and then, not on every line.
    if (this.head > 1024 && this.head * 2 > this.lines.length) { this.lines = this.lines.slice(this.head); this.head = 0; }
    for (const f of this.followers) {
      f.queue.push(line);
      if (f.queue.length > this.o.followerLines) { f.queue.shift(); f.dropped++; }
      f.wake?.();
    }
  }

  /**
   * The stored lines at or after sinceMs, then (follow) each new line until
   * the signal aborts. Pulled: a follower that falls behind loses its oldest
   * pending lines (reported as `dropped`), the ring never grows for it.
   */
  async *read(opts: { sinceMs?: number; follow: boolean }, signal: AbortSignal): AsyncGenerator<RingLine & { dropped: number }> {
    const f: Follower = { queue: [], dropped: 0 };
    if (opts.follow) this.followers.add(f);
    try {
      const since = opts.sinceMs ?? 0;
      const snapshot = this.lines.slice(this.head);
      for (const l of snapshot) {
        if (signal.aborted) return;
        if (l.time >= since) yield { ...l, dropped: 0 };
      }
      if (!opts.follow) return;
      const onAbort = () => f.wake?.();
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        while (!signal.aborted) {
          const next = f.queue.shift();
          if (next) {
            const dropped = f.dropped;
            f.dropped = 0;
            yield { ...next, dropped };
            continue;
          }
          await new Promise<void>((r) => { f.wake = r; });
          f.wake = undefined;
        }
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    } finally {
      this.followers.delete(f);
    }
  }
}

function lineTime(json: string): number {
  const m = /"time":(\d{10,})/.exec(json);
  return m ? Number(m[1]) : Date.now();
}
