// Domain <-> proto conversion for everything NestService and AccessService
// carry. The only place that knows both shapes. Unknown enum values from a
// newer peer degrade to a safe domain value (phase "nest", kind "log", state
// "unreachable") instead of failing a relay.
// Imported by: src/api, src/rpc.

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Duration } from "@bufbuild/protobuf/wkt";
import {
  EventKind as PEventKind, EventSchema, FailureSchema, IdentifyResponseSchema, KeyRole as PKeyRole, AuthorizedKeySchema,
  LevelState as PLevelState, LevelStatusSchema, Phase as PPhase, PhaseResultSchema, RepoStateSchema, RepoSyncState as PRepoSyncState,
  type AuthorizedKey as PAuthorizedKey, type Event as PEvent, type Failure as PFailure, type IdentifyResponse,
  type LevelStatus as PLevelStatus, type PhaseResult as PPhaseResult, type RepoState as PRepoState,
  CheckResult as PCheckResult, type CheckSchema, type Check as PCheck, type LogsResponseSchema, type LogsResponse,
} from "../gen/homestak/nest/v1/nest_pb.js";
import type { AuthorizedKey, Identity, KeyRole, LevelStateName, LevelStatus, LogLine, PhaseResult } from "../domain/level-api.js";
import type { CheckResult } from "../domain/checks.js";
import type { EventKind, EventPhase, LevelEvent, RepoState, RepoSyncState } from "../domain/events.js";
import type { Failure } from "../domain/failure.js";

const PHASE_TO: Record<EventPhase, PPhase> = {
  preflight: PPhase.PREFLIGHT, provision: PPhase.PROVISION, boot: PPhase.BOOT, install: PPhase.INSTALL,
  handshake: PPhase.HANDSHAKE, sync: PPhase.SYNC, secrets: PPhase.SECRETS, configure: PPhase.CONFIGURE,
  nest: PPhase.NEST, teardown: PPhase.TEARDOWN,
};
const KIND_TO: Record<EventKind, PEventKind> = {
  started: PEventKind.STARTED, progress: PEventKind.PROGRESS, finished: PEventKind.FINISHED,
  skipped: PEventKind.SKIPPED, failed: PEventKind.FAILED, log: PEventKind.LOG, rebooting: PEventKind.REBOOTING,
};
const STATE_TO: Record<LevelStateName, PLevelState> = {
  building: PLevelState.BUILDING, ready: PLevelState.READY, failed: PLevelState.FAILED,
  unreachable: PLevelState.UNREACHABLE, destroyed: PLevelState.DESTROYED,
};
const ROLE_TO: Record<KeyRole, PKeyRole> = { reader: PKeyRole.READER, controller: PKeyRole.CONTROLLER };
const SYNC_TO: Record<RepoSyncState, PRepoSyncState> = {
  "in-sync": PRepoSyncState.IN_SYNC, behind: PRepoSyncState.BEHIND, diverged: PRepoSyncState.DIVERGED,
};

function invert<K extends string, V extends number>(m: Record<K, V>): Map<number, K> {
  return new Map(Object.entries(m).map(([k, v]) => [v as number, k as K]));
}
const PHASE_FROM = invert(PHASE_TO);
const KIND_FROM = invert(KIND_TO);
const STATE_FROM = invert(STATE_TO);
const ROLE_FROM = invert(ROLE_TO);
const SYNC_FROM = invert(SYNC_TO);

export const toProtoPhase = (p: EventPhase): PPhase => PHASE_TO[p];
export const fromProtoPhase = (p: PPhase): EventPhase => PHASE_FROM.get(p) ?? "nest";
export const toProtoKind = (k: EventKind): PEventKind => KIND_TO[k];
export const fromProtoKind = (k: PEventKind): EventKind => KIND_FROM.get(k) ?? "log";
export const toProtoLevelState = (s: LevelStateName): PLevelState => STATE_TO[s];
export const fromProtoLevelState = (s: PLevelState): LevelStateName => STATE_FROM.get(s) ?? "unreachable";
export const toProtoRole = (r: KeyRole): PKeyRole => ROLE_TO[r];
/** undefined for UNSPECIFIED or unknown: the caller decides (a boundary rejects it). */
export const fromProtoRole = (r: PKeyRole): KeyRole | undefined => ROLE_FROM.get(r);

/** Whole milliseconds: Duration cannot hold fractions of a nano cleanly and budgets are ms anyway. */
const dur = (ms: number | undefined): Duration | undefined => (ms === undefined ? undefined : durationFromMs(Math.round(ms)));
const ms = (d: Duration | undefined): number | undefined => (d === undefined ? undefined : durationMs(d));

export function toProtoFailure(f: Failure): PFailure {
  return create(FailureSchema, { code: f.code, message: f.message, hint: f.hint ?? "" });
}
export function fromProtoFailure(f: PFailure): Failure {
  return f.hint ? { code: f.code, message: f.message, hint: f.hint } : { code: f.code, message: f.message };
}

export function toProtoRepo(r: RepoState): PRepoState {
  return create(RepoStateSchema, {
    name: r.name, servedCommit: r.servedCommit, worktreeCommit: r.worktreeCommit, dirty: r.dirty,
    dirtyFiles: [...r.dirtyFiles], previousCommit: r.previousCommit ?? "",
    syncState: r.syncState ? SYNC_TO[r.syncState] : PRepoSyncState.UNSPECIFIED, behind: r.behind ?? 0,
    bytes: BigInt(Math.max(0, Math.round(r.bytes ?? 0))),
  });
}
export function fromProtoRepo(r: PRepoState): RepoState {
  return {
    name: r.name, servedCommit: r.servedCommit, worktreeCommit: r.worktreeCommit, dirty: r.dirty,
    dirtyFiles: [...r.dirtyFiles], ...(r.previousCommit ? { previousCommit: r.previousCommit } : {}),
    // An unknown state from a newer peer reads as unknown (absent), never as in sync.
    ...(SYNC_FROM.has(r.syncState) ? { syncState: SYNC_FROM.get(r.syncState)! } : {}),
    ...(r.behind > 0 ? { behind: r.behind } : {}),
    ...(r.bytes > 0n ? { bytes: Number(r.bytes) } : {}),
  };
}

export function toProtoEvent(ev: LevelEvent): PEvent {
  return create(EventSchema, {
    levelPath: [...ev.levelPath],
    phase: toProtoPhase(ev.phase),
    kind: toProtoKind(ev.kind),
    time: timestampFromMs(Math.round(ev.time)),
    duration: dur(ev.durationMs),
    budget: dur(ev.budgetMs),
    failure: ev.failure ? toProtoFailure(ev.failure) : undefined,
    message: ev.message ?? "",
    progress: ev.progress
      ? { unit: ev.progress.unit, done: BigInt(Math.max(0, Math.round(ev.progress.done))), total: BigInt(Math.max(0, Math.round(ev.progress.total))) }
      : undefined,
    repos: (ev.repos ?? []).map(toProtoRepo),
    bytes: BigInt(Math.max(0, Math.round(ev.bytes ?? 0))),
  });
}

export function fromProtoEvent(p: PEvent): LevelEvent {
  const ev: { -readonly [K in keyof LevelEvent]: LevelEvent[K] } = {
    levelPath: [...p.levelPath],
    phase: fromProtoPhase(p.phase),
    kind: fromProtoKind(p.kind),
    time: p.time ? timestampMs(p.time) : Date.now(),
  };
  if (p.duration) ev.durationMs = ms(p.duration);
  if (p.budget) ev.budgetMs = ms(p.budget);
  if (p.failure) ev.failure = fromProtoFailure(p.failure);
  if (p.message) ev.message = p.message;
  if (p.progress) ev.progress = { unit: p.progress.unit, done: Number(p.progress.done), total: Number(p.progress.total) };
  if (p.repos.length > 0) ev.repos = p.repos.map(fromProtoRepo);
  if (p.bytes > 0n) ev.bytes = Number(p.bytes);
  return ev;
}

function toProtoPhaseResult(r: PhaseResult): PPhaseResult {
  return create(PhaseResultSchema, {
    phase: toProtoPhase(r.phase), kind: toProtoKind(r.kind), duration: dur(r.durationMs), budget: dur(r.budgetMs),
    failure: r.failure ? toProtoFailure(r.failure) : undefined,
  });
}
function fromProtoPhaseResult(p: PPhaseResult): PhaseResult {
  const r: { -readonly [K in keyof PhaseResult]: PhaseResult[K] } = { phase: fromProtoPhase(p.phase), kind: fromProtoKind(p.kind) };
  if (p.duration) r.durationMs = ms(p.duration);
  if (p.budget) r.budgetMs = ms(p.budget);
  if (p.failure) r.failure = fromProtoFailure(p.failure);
  return r;
}

export function toProtoStatus(s: LevelStatus): PLevelStatus {
  return create(LevelStatusSchema, {
    name: s.name, depth: s.depth, state: toProtoLevelState(s.state), address: s.address, hsdVersion: s.hsdVersion,
    hostKeyFingerprint: s.hostKeyFingerprint, provider: s.provider, repos: s.repos.map(toProtoRepo),
    phases: s.phases.map(toProtoPhaseResult), children: s.children.map(toProtoStatus), outOfSync: s.outOfSync,
    leaf: s.leaf ?? false, manifest: s.manifest ?? "",
    failure: s.failure ? toProtoFailure(s.failure) : undefined,
  });
}

export function fromProtoStatus(p: PLevelStatus): LevelStatus {
  return {
    name: p.name, depth: p.depth, state: fromProtoLevelState(p.state), address: p.address, hsdVersion: p.hsdVersion,
    hostKeyFingerprint: p.hostKeyFingerprint, provider: p.provider, repos: p.repos.map(fromProtoRepo),
    phases: p.phases.map(fromProtoPhaseResult), children: p.children.map(fromProtoStatus), outOfSync: p.outOfSync,
    ...(p.leaf ? { leaf: true } : {}), ...(p.manifest ? { manifest: p.manifest } : {}),
    ...(p.failure ? { failure: fromProtoFailure(p.failure) } : {}),
  };
}

export function toProtoIdentity(id: Identity): IdentifyResponse {
  return create(IdentifyResponseSchema, {
    name: id.name, depth: id.depth, hsdVersion: id.hsdVersion, publicKey: id.publicKey,
    hostKeyFingerprint: id.hostKeyFingerprint, sshAddress: id.sshAddress, repos: id.repos.map(toProtoRepo),
  });
}

export function fromProtoIdentity(p: IdentifyResponse): Identity {
  return {
    name: p.name, depth: p.depth, hsdVersion: p.hsdVersion, publicKey: p.publicKey,
    hostKeyFingerprint: p.hostKeyFingerprint, sshAddress: p.sshAddress, repos: p.repos.map(fromProtoRepo),
  };
}

export function toProtoKey(k: AuthorizedKey): PAuthorizedKey {
  return create(AuthorizedKeySchema, { publicKey: k.publicKey, role: toProtoRole(k.role), fingerprint: k.fingerprint, comment: k.comment });
}

/** For clients (hsctl): a key the server sent; an unknown role reads as reader, the lesser power. */
export function fromProtoKey(p: PAuthorizedKey): AuthorizedKey {
  return { publicKey: p.publicKey, role: fromProtoRole(p.role) ?? "reader", fingerprint: p.fingerprint, comment: p.comment };
}

const CHECK_TO = { ok: PCheckResult.OK, repaired: PCheckResult.REPAIRED, failed: PCheckResult.FAILED } as const;

export function toProtoCheck(c: CheckResult): MessageInitShape<typeof CheckSchema> {
  return { name: c.name, result: CHECK_TO[c.result], detail: c.detail, hint: c.hint ?? "" };
}

export function fromProtoCheck(c: PCheck): CheckResult {
  const result = c.result === PCheckResult.OK ? "ok" : c.result === PCheckResult.REPAIRED ? "repaired" : "failed";
  return { name: c.name, result, detail: c.detail, ...(c.hint ? { hint: c.hint } : {}) };
}

export function toProtoLogLine(l: LogLine): MessageInitShape<typeof LogsResponseSchema> {
  return { levelPath: [...l.levelPath], time: timestampFromMs(Math.round(l.time)), json: l.json, dropped: BigInt(Math.max(0, l.dropped)) };
}

export function fromProtoLogLine(p: LogsResponse): LogLine {
  return { levelPath: [...p.levelPath], time: p.time ? timestampMs(p.time) : Date.now(), json: p.json, dropped: Number(p.dropped) };
}
