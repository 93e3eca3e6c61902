// Events a level emits while it builds, syncs or tears down, and the repo state
// they carry. The engine, providers and git code speak these; only src/rpc
// converts them to and from proto.
// Imported by: anyone.

import type { Failure } from "./failure.js";
import type { PhaseName } from "./phases.js";

export type EventPhase = PhaseName | "teardown";
/** rebooting: the level announced its own reboot inside the phase (a configure step asked for it). */
export type EventKind = "started" | "progress" | "finished" | "skipped" | "failed" | "log" | "rebooting";

export interface RepoState {
  readonly name: string;
  /** Commit this level serves to its children ("" when it has none yet). */
  readonly servedCommit: string;
  /** Commit checked out in the level's working tree ("" at level 0 or none). */
  readonly worktreeCommit: string;
  readonly dirty: boolean;
  readonly dirtyFiles: readonly string[];
  readonly previousCommit?: string;
  /** Served commit against the parent's, computed by the parent (absent at level 0 / unknown). */
  readonly syncState?: RepoSyncState;
  /** For "behind": commits the parent serves that this level does not. */
  readonly behind?: number;
  /** Bytes received for this repo in the last sync. */
  readonly bytes?: number;
}

export type RepoSyncState = "in-sync" | "behind" | "diverged";

export interface LevelEvent {
  /** From the receiving level down to the level the event is about. */
  readonly levelPath: readonly string[];
  readonly phase: EventPhase;
  readonly kind: EventKind;
  /** Epoch ms on the emitting level's clock. */
  readonly time: number;
  readonly durationMs?: number;
  readonly budgetMs?: number;
  readonly failure?: Failure;
  readonly message?: string;
  readonly progress?: { readonly unit: string; readonly done: number; readonly total: number };
  readonly repos?: readonly RepoState[];
  readonly bytes?: number;
}

/** An event about one level, before its path and time are stamped on (src/nest/child-tree.ts does that). */
export type LocalEvent = Omit<LevelEvent, "levelPath" | "time">;

/** Where events go. Implementations never throw; a dead consumer is the caller's abort signal. */
export type EventSink = (ev: LevelEvent) => void;

/**
 * A sink for events coming up from a child: prefixes `name` (this level) to
 * their level path. The one place a level path grows on the way up.
 */
export function relayUnder(name: string, sink: EventSink): EventSink {
  return (ev) => sink({ ...ev, levelPath: [name, ...ev.levelPath] });
}

/**
 * A configure step's output: one log event per batch, each line reading
 * `<step>| <line>`. The step runner writes it; a view uses isStepOutput to
 * show every such line (it is the operator's own code talking) while it
 * thins hsd's own notes.
 */
export function stepOutputMessage(step: string, lines: readonly string[]): string {
  return lines.map((l) => `${step}| ${l}`).join("\n");
}

const STEP_LINE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\| /;

export function isStepOutput(ev: Pick<LevelEvent, "kind" | "phase" | "message">): boolean {
  return ev.kind === "log" && ev.phase === "configure" && !!ev.message && STEP_LINE.test(ev.message);
}
