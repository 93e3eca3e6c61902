// Bounded waits. Every wait in hsd goes through withTimeout (or an AbortSignal
// built by it) so none can hang.
// Imported by: anyone.

import { HsError } from "../domain/errors.js";

/**
 * Races `work` against `ms`. On timeout, aborts the controller handed to the
 * work and rejects with the error made by `onTimeout`. A parent signal, when
 * given, aborts the work too.
 */
export async function withTimeout<T>(
  ms: number,
  onTimeout: () => HsError,
  work: (signal: AbortSignal) => Promise<T>,
  parent?: AbortSignal,
): Promise<T> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const onParentAbort = () => ac.abort(parent?.reason);
  if (parent) {
    if (parent.aborted) ac.abort(parent.reason);
    else parent.addEventListener("abort", onParentAbort, { once: true });
  }
  try {
    return await new Promise<T>((resolve, reject) => {
      timer = setTimeout(() => {
        const err = onTimeout();
        ac.abort(err);
        reject(err);
      }, ms);
      if (ac.signal.aborted) reject(ac.signal.reason);
      ac.signal.addEventListener("abort", () => reject(ac.signal.reason), { once: true });
      work(ac.signal).then(resolve, reject);
    });
  } finally {
    if (timer) clearTimeout(timer);
    parent?.removeEventListener("abort", onParentAbort);
  }
}

/** Throws the signal's reason if it is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
}
