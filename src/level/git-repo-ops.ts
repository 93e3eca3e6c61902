// RepoOps on real git: level 0 refreshes its bare exports from the operator's
// checkouts (with the _working snapshot); a level below fetches them from its
// parent over SSH git and checks out its working trees. Built by the daemon
// wiring; level.ts only sees the RepoOps interface.

import type { HsdConfig } from "../config/config.js";
import { levelPaths } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import type { RepoState } from "../nest/events.js";
import { exportedRepoState, refreshExports } from "../git/export-repos.js";
import { syncFromParent } from "../git/sync-from-parent.js";
import { ParentConnection } from "../git/parent-connection.js";
import type { RepoOps } from "./level.js";

export function gitRepoOps(o: { config: HsdConfig; repos: Readonly<Record<string, string>>; userKeyPath: string; log: Logger }): RepoOps {
  const { config } = o;
  const paths = levelPaths(config.root);
  const names = config.parent ? config.repoNames : Object.keys(o.repos);
  let last: RepoState[] | undefined;
  // One SSH connection to the parent, kept across syncs (reconnects if it drops).
  const parentConn = config.parent
    ? new ParentConnection({ parent: config.parent, userKeyPath: o.userKeyPath, connectTimeoutMs: config.timeouts.connectMs, log: o.log })
    : undefined;

  const merged = async (): Promise<RepoState[]> => {
    const served = await exportedRepoState(paths.reposDir, names);
    if (!last) return served;
    const wt = new Map(last.map((r) => [r.name, r]));
    return served.map((s) => {
      const l = wt.get(s.name);
      return l ? { ...s, worktreeCommit: l.worktreeCommit, dirty: l.dirty, dirtyFiles: l.dirtyFiles } : s;
    });
  };

  return {
    async refresh(signal, onProgress) {
      if (!config.parent) {
        last = await refreshExports({ repos: o.repos, exportsDir: paths.reposDir, secretPatterns: config.secretPatterns, log: o.log });
        return { repos: last, bytes: 0 };
      }
      try {
        const r = await syncFromParent({
          parent: config.parent, userKeyPath: o.userKeyPath, repoNames: names, exportsDir: paths.reposDir, workDir: paths.workDir,
          connectTimeoutMs: config.timeouts.connectMs, commandTimeoutMs: config.timeouts.commandMs, log: o.log,
          onProgress, signal, connection: parentConn,
        });
        last = r.repos;
        return { repos: r.repos, bytes: r.bytes };
      } catch (err) {
        const states = (err as { details?: { states?: RepoState[] } }).details?.states;
        if (states) last = states;
        throw err;
      }
    },
    state: merged,
    verify: merged,
  };
}
