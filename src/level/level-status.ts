// Helpers that turn journal records into LevelStatus, attest each child's repos
// against its parent's (in sync / behind N / diverged), and summarise what a
// sync changed.
// Imported by: src/level.

import { PHASES } from "../domain/phases.js";
import type { LevelStateName, LevelStatus, PhaseResult } from "../domain/level-api.js";
import type { RepoState, RepoSyncState } from "../domain/events.js";
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
    ...(rec.node?.type === "vm" ? { leaf: true } : {}), ...(rec.manifest ? { manifest: rec.manifest } : {}),
  };
}

/** Marks `child` out of sync when any served commit differs from the parent's. */
export function markOutOfSync(child: LevelStatus, parentRepos: readonly RepoState[]): LevelStatus {
  const mine = new Map(child.repos.map((r) => [r.name, r.servedCommit]));
  const differs = parentRepos.some((p) => p.servedCommit !== "" && mine.get(p.name) !== p.servedCommit);
  return { ...child, outOfSync: child.state !== "unreachable" && differs };
}

export type CompareRepo = (name: string, childCommit: string) => Promise<{ syncState: RepoSyncState; behind: number } | undefined>;

/**
 * Annotates each of a reachable child's repos with where it stands against
 * this (its parent's) export. Only the parent can say: it holds every object
 * of both commits. Without a comparator it falls back to commit equality.
 */
export async function attestChild(child: LevelStatus, parentRepos: readonly RepoState[], compare?: CompareRepo): Promise<LevelStatus> {
  const base = markOutOfSync(child, parentRepos);
  if (!compare) return base;
  // An unreachable child is attested on what it last reported (the journal).
  const repos = await Promise.all(child.repos.map(async (r) => {
    const c = await compare(r.name, r.servedCommit).catch(() => undefined);
    return c ? { ...r, syncState: c.syncState, ...(c.behind > 0 ? { behind: c.behind } : {}) } : r;
  }));
  const missing = parentRepos.some((p) => p.servedCommit !== "" && !child.repos.some((r) => r.name === p.name));
  if (child.state === "unreachable") return { ...base, repos };
  return { ...base, repos, outOfSync: missing || repos.some((r) => r.syncState !== undefined && r.syncState !== "in-sync") || base.outOfSync };
}

/** One line for a sync event: which repos moved (old..new) and how many stayed. */
export function describeChanges(repos: readonly RepoState[]): string {
  const moved = repos.filter((r) => r.previousCommit && r.previousCommit !== r.servedCommit);
  const held = repos.filter((r) => r.dirty);
  const parts = moved.map((r) => `${r.name} ${r.previousCommit!.slice(0, 8)}..${r.servedCommit.slice(0, 8)}`);
  const unchanged = repos.length - moved.length;
  if (unchanged > 0) parts.push(moved.length === 0 ? "no change" : `${unchanged} unchanged`);
  for (const r of held) parts.push(`${r.name} worktree held at ${r.worktreeCommit.slice(0, 8)} (local edits: ${r.dirtyFiles.slice(0, 5).join(", ")})`);
  return parts.join("; ");
}
