// Helpers that turn journal records into LevelStatus and flag levels whose
// commits differ from their parent's. Used by level.ts only.

import { PHASES } from "../config/config.js";
import type { LevelStateName, LevelStatus, PhaseResult, RepoState } from "../nest/events.js";
import type { ChildRecord } from "../nest/journal.js";

/** What the parent last knew of a child, for when the child cannot answer. */
export function childStatusFromRecord(rec: ChildRecord, state: LevelStateName): LevelStatus {
  const phases: PhaseResult[] = [];
  for (const p of PHASES) {
    const r = rec.phases[p];
    if (r) phases.push({ phase: p, kind: r.kind, durationMs: r.durationMs, budgetMs: r.budgetMs, failure: r.failure });
  }
  return {
    name: rec.name, depth: 0, state, address: rec.endpoint ? `${rec.endpoint.host}:${rec.endpoint.port}` : rec.address ?? "",
    hsdVersion: rec.hsdVersion ?? "", hostKeyFingerprint: rec.endpoint?.hostKeyFingerprint ?? "", provider: rec.provider,
    repos: rec.repos ?? [], phases, children: [], outOfSync: false,
  };
}

/** Marks `child` out of sync when any served commit differs from the parent's. */
export function markOutOfSync(child: LevelStatus, parentRepos: readonly RepoState[]): LevelStatus {
  const mine = new Map(child.repos.map((r) => [r.name, r.servedCommit]));
  const differs = parentRepos.some((p) => p.servedCommit !== "" && mine.get(p.name) !== p.servedCommit);
  return { ...child, outOfSync: child.state !== "unreachable" && differs };
}
