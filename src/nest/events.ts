// Domain types for events, level status and the operations a level serves.
// The engine, providers and git code speak these; only src/api and the child
// client convert them to and from proto. Anyone may import this module.

import type { PhaseName } from "../config/config.js";

export type EventPhase = PhaseName | "teardown";
export type EventKind = "started" | "progress" | "finished" | "skipped" | "failed" | "log";

export interface Failure {
  /** Stable code (HsError.code). */
  readonly code: string;
  /** Secret-free message. */
  readonly message: string;
  readonly hint?: string;
}

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

/** Where events go. Implementations never throw; a dead consumer is the caller's abort signal. */
export type EventSink = (ev: LevelEvent) => void;

export type LevelStateName = "building" | "ready" | "failed" | "unreachable" | "destroyed";

export interface PhaseResult {
  readonly phase: EventPhase;
  readonly kind: EventKind;
  readonly durationMs?: number;
  readonly budgetMs?: number;
  readonly failure?: Failure;
}

export interface LevelStatus {
  readonly name: string;
  readonly depth: number;
  readonly state: LevelStateName;
  readonly address: string;
  readonly hsdVersion: string;
  readonly hostKeyFingerprint: string;
  readonly provider: string;
  readonly repos: readonly RepoState[];
  readonly phases: readonly PhaseResult[];
  readonly children: readonly LevelStatus[];
  readonly outOfSync: boolean;
  readonly failure?: Failure;
}

export interface Identity {
  readonly name: string;
  readonly depth: number;
  readonly hsdVersion: string;
  /** OpenSSH one-line public key of the level's own key pair. */
  readonly publicKey: string;
  readonly hostKeyFingerprint: string;
  /** host:port of the level's SSH endpoint. */
  readonly sshAddress: string;
  readonly repos: readonly RepoState[];
}

export interface NestOptions {
  /** Levels to build below this one (validated: 0..maxDepth). */
  readonly depth: number;
  /** Children per level (validated: 1..maxWidth). */
  readonly width: number;
  readonly provider: "local" | "pve";
  readonly isolation: "process" | "netns";
}

export type KeyRole = "reader" | "controller";

export interface AuthorizedKey {
  /** "ssh-ed25519 AAAA... comment" */
  readonly publicKey: string;
  readonly role: KeyRole;
  /** SHA256:... of the key blob. */
  readonly fingerprint: string;
  readonly comment: string;
}

/** What the NestService gRPC handlers call. Implemented by the daemon's level. */
export interface LevelApi {
  nest(opts: NestOptions, sink: EventSink, signal: AbortSignal): Promise<void>;
  status(signal: AbortSignal): Promise<LevelStatus>;
  destroy(opts: { self: boolean }, sink: EventSink, signal: AbortSignal): Promise<void>;
  sync(opts: { recursive: boolean }, sink: EventSink, signal: AbortSignal): Promise<void>;
  identify(): Promise<Identity>;
  /** Merges scoped secrets (YAML mapping) into this level's file; returns key names. */
  putSecrets(yaml: string): Promise<string[]>;
  configure(sink: EventSink, signal: AbortSignal): Promise<void>;
  /** The provider's preflight checks only (hsctl doctor). */
  doctor(opts: { provider: "local" | "pve"; isolation: "process" | "netns" }, signal: AbortSignal): Promise<CheckResult[]>;
}

export interface CheckResult {
  readonly name: string;
  readonly result: "ok" | "repaired" | "failed";
  readonly detail: string;
  readonly hint?: string;
}

/** What the AccessService gRPC handlers call. */
export interface AccessApi {
  addKey(key: { publicKey: string; role: KeyRole; comment?: string }): Promise<AuthorizedKey>;
  removeKey(sel: { publicKey?: string; fingerprint?: string }): Promise<boolean>;
  listKeys(): Promise<AuthorizedKey[]>;
}
