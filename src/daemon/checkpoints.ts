// The daemon's named checkpoints: a handler's start (identify, sync, secrets,
// configure, nest), a state file's write between fsync and rename
// (journal-write, secrets-write), startup before readiness and level 0's
// placing of each demo checkout (demo-place-<repo>). The product only
// publishes each point on the diagnostics channel "hsd:checkpoint"; with no
// subscriber (always, outside tests) a point costs nothing and no hook is wired.
// Tests subscribe from a preload module (test/helpers/fault-preload.mjs, loaded
// with node --import) to hold or kill a level at a point deterministically.
// Imported by: src/daemon.

import { hasSubscribers, channel } from "node:diagnostics_channel";

export const CHECKPOINT_CHANNEL = "hsd:checkpoint";

/** What a subscriber is told at a point; it may hand back work to wait for. */
export interface CheckpointMessage {
  readonly point: string;
  /** The level's name and state directory (a subscriber may keep markers there). */
  readonly level: string;
  readonly stateDir: string;
  /** Says something to whoever waits on the point (the caller's events, or the log). */
  readonly announce: (message: string) => void;
  readonly signal: AbortSignal;
  /** The point waits for `p` before it goes on (and fails with its error). */
  hold(p: Promise<void>): void;
}

export interface Checkpoints {
  /** True when something listens: only then are hooks wired. */
  readonly active: boolean;
  at(point: string, announce: (message: string) => void, signal: AbortSignal): Promise<void>;
  /** A point of background work: nobody to tell and nothing that cancels it. */
  pass(point: string): Promise<void>;
  /** A beforeRename hook for writeFileAtomic at `point`, or undefined when nothing listens. */
  beforeRename(point: string): ((tmp: string) => Promise<void>) | undefined;
}

const NEVER = new AbortController().signal;

/** No checkpoints (what a level built without a daemon's wiring gets). */
export const NO_CHECKPOINTS: Checkpoints = { active: false, at: async () => {}, pass: async () => {}, beforeRename: () => undefined };

/** This level's checkpoints (read once at wiring: a preload subscribes before the daemon starts). */
export function levelCheckpoints(level: string, stateDir: string): Checkpoints {
  const active = hasSubscribers(CHECKPOINT_CHANNEL);
  const ch = channel(CHECKPOINT_CHANNEL);
  const at = async (point: string, announce: (message: string) => void, signal: AbortSignal): Promise<void> => {
    if (!active) return;
    const holds: Promise<void>[] = [];
    const msg: CheckpointMessage = { point, level, stateDir, announce, signal, hold: (p) => { holds.push(p); } };
    ch.publish(msg);
    for (const h of holds) await h;
  };
  const pass = (point: string): Promise<void> => at(point, () => {}, NEVER);
  return {
    active, at, pass,
    beforeRename: (point) => (active ? () => pass(point) : undefined),
  };
}
