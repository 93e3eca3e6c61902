// Caps concurrent upload-packs (or image transfers: one instance each) per
// endpoint; extra requests wait FIFO and give up after a deadline with QueueTimeout.
// Imported by: src/ssh.

import { QueueTimeoutError, CancelledError } from "../domain/errors.js";

interface Waiter { grant: () => void; fail: (err: Error) => void }

export class UploadPackLimiter {
  private active = 0;
  private readonly waiters: Waiter[] = [];

  constructor(private readonly max: number, private readonly what = "upload-pack") {}

  get activeCount(): number { return this.active; }
  get queuedCount(): number { return this.waiters.length; }

  /** Resolves with a release function once a slot is free. */
  acquire(timeoutMs: number, signal?: AbortSignal): Promise<() => void> {
    const release = (() => {
      let released = false;
      return () => {
        if (released) return;
        released = true;
        this.active--;
        this.next();
      };
    })();
    if (this.active < this.max && this.waiters.length === 0) {
      this.active++;
      return Promise.resolve(release);
    }
    return new Promise((resolve, reject) => {
      const remove = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const w: Waiter = {
        grant: () => { remove(); this.active++; resolve(release); },
        fail: (err) => { remove(); reject(err); },
      };
      const timer = setTimeout(() => w.fail(new QueueTimeoutError(`${this.what} queue wait exceeded ${timeoutMs} ms`, {
        details: { timeoutMs, max: this.max },
      })), timeoutMs);
      const onAbort = () => w.fail(new CancelledError(`${this.what} request went away while queued`));
      if (signal?.aborted) { onAbort(); return; }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  private next(): void {
    if (this.active < this.max) this.waiters[0]?.grant();
  }
}
