// A first sync's images begun before the sync is asked for (at the parent's
// handshake, RepoOps.warmParent): the image is what a PVE level's template
// waits on, so its bytes start moving while the handshake ends. The sync
// that follows joins the transfer (its progress from then on, the last one
// so far first); one that had already failed is fetched again by that sync.
// Imported by: src/level.

import type { FetchImageResult } from "../images/fetch-image.js";
import type { SyncProgress } from "./repo-ops.js";

type Images = Record<string, FetchImageResult>;

export interface ImagesAhead {
  /** The transfer, now reporting to `onProgress` and ended by `signal`; undefined when it failed before the join. */
  join(onProgress: (p: SyncProgress) => void, signal: AbortSignal): Promise<Images> | undefined;
  /** Settles with the transfer (never rejects): true when every image is in. */
  readonly settled: Promise<boolean>;
}

export function beginImages(start: (onProgress: (p: SyncProgress) => void, signal: AbortSignal) => Promise<Images>): ImagesAhead {
  let last: SyncProgress | undefined;
  let to: ((p: SyncProgress) => void) | undefined;
  let failed = false;
  const stop = new AbortController();
  const p = start((x) => { if (to) to(x); else last = x; }, stop.signal);
  const settled = p.then(() => true, () => { failed = true; return false; });
  return {
    settled,
    join(onProgress, signal) {
      if (failed) return undefined;
      if (last) onProgress(last);
      to = onProgress;
      if (signal.aborted) stop.abort(signal.reason);
      else signal.addEventListener("abort", () => stop.abort(signal.reason), { once: true });
      return p;
    },
  };
}
