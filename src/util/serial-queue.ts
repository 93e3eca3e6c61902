// Runs async jobs one at a time, in order, whatever earlier jobs did.
// Imported by: anyone.

export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const p = this.tail.then(job, job);
    this.tail = p.catch(() => {});
    return p;
  }
}
