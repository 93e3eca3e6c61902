// What a level serves: the operations behind NestService and AccessService, and
// the status, identity and key shapes they return. Implemented by src/level
// (and by a child link, which forwards them over gRPC).
// Imported by: anyone.

import type { CheckResult } from "./checks.js";
import type { EventKind, EventPhase, EventSink, RepoState } from "./events.js";
import type { Failure } from "./failure.js";
import type { ProviderName, ProviderOptions } from "./providers.js";
import type { BuildPlan } from "./plan.js";

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
  /** A manifest leaf (type vm): no hsd; its parent reports it. */
  readonly leaf?: boolean;
  /** The manifest that built this level ("" / absent: none). */
  readonly manifest?: string;
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
  readonly provider: ProviderName;
  /** The provider's own options (validated by its registry entry); nothing else reads them. */
  readonly options: ProviderOptions;
  /** A manifest's nodes to build instead of a uniform tree (depth/width then follow from it). */
  readonly plan?: BuildPlan;
}

export interface DestroyOptions {
  /** Also stop the serving level (a level 0 hsctl started). */
  readonly self: boolean;
  /** Only children this manifest built (with their subtrees). */
  readonly manifest?: string;
  /** Only these children (with their subtrees). */
  readonly names?: readonly string[];
  /** That level and its subtree only (torn down by its parent). */
  readonly levelPath?: LevelPath;
}

export interface DoctorOptions {
  /** Absent (a request for a level below): that level's own default. */
  readonly provider?: ProviderName;
  readonly options?: ProviderOptions;
  readonly levelPath?: LevelPath;
}

/**
 * Which level a request is for: names from the serving level down, e.g.
 * ["l0", "l1", "l2"]; empty or absent = the serving level. Each level checks
 * its own name and relays the rest to the named child.
 */
export type LevelPath = readonly string[];

export interface LogsOptions {
  readonly follow: boolean;
  /** Only lines written at or after this epoch ms (the asking level's clock). */
  readonly sinceMs?: number;
  /** Only lines about this phase. */
  readonly phase?: EventPhase;
  readonly levelPath?: LevelPath;
}

/** One line of a level's hsd log, already redacted where it was written. */
export interface LogLine {
  /** From the receiving level down to the level that wrote it. */
  readonly levelPath: readonly string[];
  /** Epoch ms on the writing level's clock. */
  readonly time: number;
  /** The JSON object the level's logger wrote. */
  readonly json: string;
  /** Lines skipped before this one because the reader fell behind. */
  readonly dropped: number;
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

/**
 * What one export serves a fetcher, as upload-pack advertises it: the branch
 * HEAD names and every head and tag. Invariant: `refs` holds `head`, names
 * start with refs/heads/ or refs/tags/, values are object ids (40 or 64 hex).
 */
export interface ExportRefs {
  readonly head: string;
  readonly refs: Readonly<Record<string, string>>;
}

/**
 * A parent's exports as it sends them with a sync request, by repo name. A
 * child whose own export of a repo holds exactly the same skips asking the
 * parent for it (no channel, no upload-pack); anything else is fetched.
 */
export type ParentRefs = Readonly<Record<string, ExportRefs>>;

/** A sync request: recursive waves go down the tree; parentRefs: what the asking parent serves now. */
export interface SyncOptions {
  readonly recursive: boolean;
  /** Each level below 0 re-runs its configure steps after its sync (hsctl sync --configure). */
  readonly configure?: boolean;
  readonly levelPath?: LevelPath;
  readonly parentRefs?: ParentRefs;
}

/** What a parent asks of a child: the tree operations a child link forwards. */
export interface ChildApi {
  nest(opts: NestOptions, sink: EventSink, signal: AbortSignal): Promise<void>;
  status(signal: AbortSignal, levelPath?: LevelPath): Promise<LevelStatus>;
  /** With a levelPath: that level and its subtree only (torn down by its parent). */
  destroy(opts: DestroyOptions, sink: EventSink, signal: AbortSignal): Promise<void>;
  sync(opts: SyncOptions, sink: EventSink, signal: AbortSignal): Promise<void>;
  /** The provider's preflight checks only (hsctl doctor). */
  doctor(opts: DoctorOptions, signal: AbortSignal): Promise<CheckResult[]>;
  /** The level's log lines; pulled, so a slow reader slows the stream, never grows a buffer. */
  logs(opts: LogsOptions, signal: AbortSignal): AsyncIterable<LogLine>;
  identify(): Promise<Identity>;
  /** Merges scoped secrets (YAML mapping) into this level's file; returns key names. */
  putSecrets(yaml: string): Promise<string[]>;
  configure(sink: EventSink, signal: AbortSignal): Promise<void>;
}

/** What the NestService gRPC handlers call. Implemented by the daemon's level. */
export type LevelApi = ChildApi;

/** What the AccessService gRPC handlers call. */
export interface AccessApi {
  addKey(key: { publicKey: string; role: KeyRole; comment?: string }): Promise<AuthorizedKey>;
  removeKey(sel: { publicKey?: string; fingerprint?: string }): Promise<boolean>;
  listKeys(): Promise<AuthorizedKey[]>;
}
