// Per-key runs of a job, one at a time, where a run that has not started yet
// is shared by every caller that asks for it meanwhile: its result was read
// after each of their calls arrived. Level 0 refreshes each export through it,
// so a nest's refresh asked for while a demo checkout is still being written
// is the start-up export of that repo, not a second pass after it.
// Imported by: anyone.

interface KeyState<T> {
  /** A run waiting for the one before it or for its key to be ready: callers join it. */
  waiting?: Promise<T>;
  /** The run under way: a caller now gets a new run after it. */
  running?: Promise<T>;
}

export class SharedRunQueue<T> {
  private readonly keys = new Map<string, KeyState<T>>();

  /**
   * `job` for `key`, once the key's previous run has settled and `ready`
   * has resolved (a rejection of `ready` is this run's). A caller arriving
   * before that point gets the same run.
   */
  run(key: string, ready: () => Promise<void>, job: () => Promise<T>): Promise<T> {
    let s = this.keys.get(key);
    if (!s) this.keys.set(key, (s = {}));
    const state = s;
    if (state.waiting) return state.waiting;
    const before = state.running;
    const run: { p?: Promise<T> } = {};
    run.p = (async () => {
      // Always suspends first (even with nothing before it), so run.p is set before it is compared below.
      await before?.catch(() => undefined);
      try {
        await ready();
      } finally {
        // From here on the run reads what it reads: later callers need a run of their own.
        if (state.waiting === run.p) state.waiting = undefined;
      }
      state.running = run.p;
      try {
        return await job();
      } finally {
        if (state.running === run.p) state.running = undefined;
      }
    })();
    state.waiting = run.p;
    return run.p;
  }
}
