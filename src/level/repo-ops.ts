// What a level asks of its repo set (RepoOps) and what a sync reports
// (SyncProgress): level.ts drives them, git-repo-ops.ts implements them on
// real git. Types only.
// Imported by: src/level.

import type { ParentRefs } from "../domain/level-api.js";
import type { RepoState, RepoSyncState } from "../domain/events.js";

/** One progress report of a sync: a repo's git phase (objects), or an image's bytes (unit and message say so). */
export interface SyncProgress {
  readonly repo: string;
  readonly phase: string;
  readonly loaded: number;
  readonly total: number;
  readonly unit?: string;
  readonly message?: string;
}

/** This level's repo set: refresh it (level 0: from checkouts; below: from the parent). */
export interface RepoOps {
  /** Level 0's may run while another is under way (the start-up export is off the sync chain): it queues per repo. */
  refresh(signal: AbortSignal, onProgress: (p: SyncProgress) => void, parentRefs?: ParentRefs, reposAfter?: Promise<void>): Promise<{ repos: RepoState[]; bytes: number }>;
  /** What this level's exports serve now, sent with a sync request to a child (it skips the repos it already holds). */
  exportRefs?(): Promise<ParentRefs>;
  state(): Promise<RepoState[]>;
  /**
   * What is served now, without waiting for level 0's demo repos to be
   * generated (Identify: a liveness answer must not wait minutes on a slow host).
   */
  stateNow?(): Promise<RepoState[]>;
  /** Checks working trees against what is served (configure). */
  verify(): Promise<RepoState[]>;
  /**
   * At Identify (the parent has authorized our key): begin a first sync's images,
   * connect to the parent and set up that sync's repos, in the background
   * (failures are the sync's); the connect and the set-up wait for `reposAfter`
   * when the images need neither. Returns whether those images got in
   * (undefined: none begun).
   */
  warmParent?(reposAfter?: Promise<void>): Promise<boolean> | undefined;
  /** Where a child's served commit of `name` stands against this level's (status); undefined when unknown. */
  compare?(name: string, childCommit: string): Promise<{ syncState: RepoSyncState; behind: number } | undefined>;
}
