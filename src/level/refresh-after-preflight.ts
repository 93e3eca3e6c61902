// Level 0's export refresh for a nest, begun once a child is past its
// preflight (whose checks, and a PVE level 0's template, then have the level
// to themselves) or when a sync phase asks for the exports first. No child
// phase before sync reads the exports, so it still runs while children boot.
// Imported by: src/level.

import type { EventSink } from "../domain/events.js";

export interface RefreshAfterPreflight {
  /** The nest's events pass through here: a child's first event past preflight begins the refresh. */
  readonly sink: EventSink;
  /** Begins the refresh if not yet begun; settles with it. */
  readonly start: () => Promise<void>;
  /** The refresh when begun, else undefined. */
  begun(): Promise<void> | undefined;
}

export function refreshAfterPreflight(refresh: () => Promise<void>, sink: EventSink): RefreshAfterPreflight {
  let refreshed: Promise<void> | undefined;
  const start = () => (refreshed ??= refresh());
  return {
    start,
    begun: () => refreshed,
    sink: (ev) => {
      sink(ev);
      if (!refreshed && ev.levelPath.length > 1 && ev.phase !== "preflight") void start().catch(() => undefined);
    },
  };
}
