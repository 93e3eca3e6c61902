// Rate-limits progress reports per key (a repo and its git phase, say) so a
// fetch that counts 1,000 objects sends a handful of events up the tree, not
// 1,000 relayed through every level. Any progress source may import it.
// Imported by: anyone.

export interface ProgressThrottleOptions<T> {
  /** Minimum time between two reports of the same key. */
  readonly intervalMs: number;
  readonly now: () => number;
  readonly key: (ev: T) => string;
  /** A final report (e.g. done === total) always goes out, so the last state shown is the true one (once: a repeat of it is dropped). */
  readonly isFinal: (ev: T) => boolean;
  readonly emit: (ev: T) => void;
  /**
   * false: a key's first report is held too, and goes out only once the key has
   * been reporting for intervalMs (by `schedule`, so a stalled key still shows,
   * within two intervals) or as its final. Work that ends within one interval
   * then costs one report, not two. Default true: the first report goes out at
   * once, and a held one waits for the key's next report or flush.
   */
  readonly leading?: boolean;
  /** Runs fn after ms (leading: false). Default: an unref'd setTimeout. */
  readonly schedule?: (fn: () => void, ms: number) => { cancel(): void };
}

export interface ProgressThrottle<T> {
  (ev: T): void;
  /** Emits each key's held-back latest report, if any, and stops any pending timer; call when the work ends. */
  flush(): void;
}

const defaultSchedule = (fn: () => void, ms: number): { cancel(): void } => {
  const t = setTimeout(fn, ms);
  t.unref();
  return { cancel: () => clearTimeout(t) };
};

interface KeyState<T> {
  /** When the key's last report went out; never sent: when its first came. */
  at: number;
  /** That report was final (a repeat of a final is dropped). */
  final: boolean;
  /** The newest report held back since; undefined: none. */
  held: T | undefined;
}

export function progressThrottle<T>(o: ProgressThrottleOptions<T>): ProgressThrottle<T> {
  const leading = o.leading ?? true;
  const schedule = o.schedule ?? defaultSchedule;
  const state = new Map<string, KeyState<T>>();
  // leading: false only: the one pending timer.
  let timer: { cancel(): void } | undefined;
  const send = (s: KeyState<T>, ev: T, final: boolean, now: number) => {
    s.at = now;
    s.final = final;
    s.held = undefined;
    o.emit(ev);
  };
  // Sends every held report whose interval is over, then waits for the next one to be due.
  const due = () => {
    timer = undefined;
    const now = o.now();
    let next = Infinity;
    for (const s of state.values()) {
      if (s.held === undefined) continue;
      if (now - s.at >= o.intervalMs) send(s, s.held, false, now);
      else next = Math.min(next, s.at + o.intervalMs - now);
    }
    if (next !== Infinity) timer = schedule(due, next);
  };
  const report = ((ev: T) => {
    const k = o.key(ev);
    const now = o.now();
    const s = state.get(k);
    const final = o.isFinal(ev);
    if (final && s?.final) return;
    if (!s) {
      const fresh: KeyState<T> = { at: now, final: false, held: undefined };
      state.set(k, fresh);
      if (leading || final) { send(fresh, ev, final, now); return; }
      fresh.held = ev;
      timer ??= schedule(due, o.intervalMs);
      return;
    }
    if (final || now - s.at >= o.intervalMs) { send(s, ev, final, now); return; }
    s.held = ev;
    if (!leading) timer ??= schedule(due, s.at + o.intervalMs - now);
  }) as ProgressThrottle<T>;
  report.flush = () => {
    timer?.cancel();
    timer = undefined;
    for (const s of state.values()) {
      if (s.held === undefined) continue;
      const ev = s.held;
      s.held = undefined;
      o.emit(ev);
    }
  };
  return report;
}
