// Turns a step's stdout and stderr into batched log lines: lines are split
// (overlong ones cut), queued up to a bound, and flushed as one event per
// interval; while the queue is full the streams are paused, so a chatty step
// waits on its pipe instead of flooding the relay or growing a buffer. The
// last lines are kept for the failure.
// Imported by: src/homestak/step-runner.ts.

import type { Readable } from "node:stream";

export interface StepOutputOptions {
  readonly flushMs: number;
  /** Lines queued before the streams are paused. */
  readonly maxPending: number;
  readonly maxLineBytes: number;
  readonly tailLines: number;
  readonly emit: (lines: string[]) => void;
}

export const STEP_OUTPUT_DEFAULTS = Object.freeze({ flushMs: 100, maxPending: 200, maxLineBytes: 4096, tailLines: 20 });

export class StepOutput {
  private pending: string[] = [];
  private readonly tail: string[] = [];
  private readonly streams: Readable[] = [];
  private readonly partial = new Map<Readable, string>();
  private timer: NodeJS.Timeout | undefined;
  private paused = false;

  constructor(private readonly o: StepOutputOptions) {}

  attach(stream: Readable): void {
    this.streams.push(stream);
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => this.onData(stream, chunk));
    stream.on("end", () => {
      const rest = this.partial.get(stream);
      if (rest) this.push(rest);
      this.partial.delete(stream);
    });
  }

  /** The last lines seen (for the failure). */
  lastLines(): string[] {
    return [...this.tail];
  }

  /** Flushes what is queued and stops the timer. */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
  }

  private onData(stream: Readable, chunk: string): void {
    const text = (this.partial.get(stream) ?? "") + chunk;
    const parts = text.split("\n");
    let rest = parts.pop() ?? "";
    // A line with no newline in sight is cut, so one line cannot grow a buffer.
    if (Buffer.byteLength(rest) > this.o.maxLineBytes) { this.push(rest); rest = ""; }
    this.partial.set(stream, rest);
    for (const line of parts) this.push(line);
  }

  private push(raw: string): void {
    const line = cut(raw.replace(/\r$/, ""), this.o.maxLineBytes);
    this.tail.push(line);
    if (this.tail.length > this.o.tailLines) this.tail.shift();
    this.pending.push(line);
    if (this.pending.length >= this.o.maxPending && !this.paused) {
      this.paused = true;
      for (const s of this.streams) s.pause();
    }
    this.timer ??= setTimeout(() => { this.timer = undefined; this.flush(); }, this.o.flushMs);
  }

  private flush(): void {
    if (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      this.o.emit(batch);
    }
    if (this.paused) {
      this.paused = false;
      for (const s of this.streams) s.resume();
    }
  }
}

function cut(line: string, maxBytes: number): string {
  if (Buffer.byteLength(line) <= maxBytes) return line;
  return `${Buffer.from(line).subarray(0, maxBytes).toString("utf8")}…`;
}
