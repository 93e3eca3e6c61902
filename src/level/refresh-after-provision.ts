// Level 0's export refresh for a nest, begun once a child is past its
// preflight and provision (whose checks, a PVE level 0's template and the
// child's clone request then have the level to themselves; the refresh's CPU
// work delayed the clone's POST ~20 ms) or when a sync phase asks for the
// exports first. No child phase before sync reads the exports, so it still
// runs while children boot.
// Imported by: src/level.

import type { EventSink } from "../domain/events.js";

export interface RefreshAfterProvision {
  /** The nest's events pass through here: a child's first event past provision begins the refresh. */
  readonly sink: EventSink;
  /** Begins the refresh if not yet begun; settles with it. */
  readonly start: () => Promise<void>;
  /** The refresh when begun, else undefined. */
  begun(): Promise<void> | undefined;
}

export function refreshAfterProvision(refresh: () => Promise<void>, sink: EventSink): RefreshAfterProvision {
  let refreshed: Promise<void> | undefined;
  const start = () => (refreshed ??= refresh());
  return {
    start,
    begun: () => refreshed,
    sink: (ev) => {
      sink(ev);
      if (!refreshed && ev.levelPath.length > 1 && ev.phase !== "preflight" && ev.phase !== "provision") void start().catch(() => undefined);
    },
  };
}
