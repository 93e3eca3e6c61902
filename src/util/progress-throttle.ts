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
}

export interface ProgressThrottle<T> {
  (ev: T): void;
  /** Emits each key's held-back latest report, if any; call when the work ends. */
  flush(): void;
}

export function progressThrottle<T>(o: ProgressThrottleOptions<T>): ProgressThrottle<T> {
  // Per key: when it last went out, whether that was a final report, and the
  // newest report held back since (undefined: none).
  const state = new Map<string, { at: number; final: boolean; held: T | undefined }>();
  const report = ((ev: T) => {
    const k = o.key(ev);
    const now = o.now();
    const s = state.get(k);
    const final = o.isFinal(ev);
    if (final && s?.final) return;
    if (!s || final || now - s.at >= o.intervalMs) {
      state.set(k, { at: now, final, held: undefined });
      o.emit(ev);
      return;
    }
    s.held = ev;
  }) as ProgressThrottle<T>;
  report.flush = () => {
    for (const s of state.values()) {
      if (s.held === undefined) continue;
      const ev = s.held;
      s.held = undefined;
      o.emit(ev);
    }
  };
  return report;
}
