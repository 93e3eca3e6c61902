// Runs async jobs at most `size` at a time, starting them in the order they
// were queued: a job starts as soon as any slot is free (no job waits behind
// a long one while another slot idles, as fixed lanes would make it).
// Imported by: anyone.

export class WorkPool {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly size: number) {
    if (!(size >= 1)) throw new RangeError(`a work pool needs at least one slot, not ${size}`);
  }

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.running >= this.size) await new Promise<void>((res) => this.waiting.push(res));
    else this.running++;
    try {
      return await job();
    } finally {
      // The slot passes straight to the next job in line, or is freed.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
