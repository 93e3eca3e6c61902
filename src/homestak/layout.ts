// A level's homestak layout: where each repo's working tree sits under the
// homestak root, and where the level's site-config (config/) and its
// gitignored per-level files are. The only module that knows these paths.
// Level 0 keeps the operator's checkouts; below it, trees follow homestak's
// own layout so homestak's tools find each other.
// Imported by: anyone.

import { join } from "node:path";
import type { ConfigureStep, HsdConfig } from "../config/config.js";

export interface HomestakLayout {
  /** $HOMESTAK_ROOT of this level. */
  readonly root: string;
  /** Absolute working tree of `repo` on this level (level 0: the operator's checkout). */
  worktree(repo: string): string;
  /** The repo whose tree is config/ (the site-config), if this level has one. */
  readonly configRepo: string | undefined;
  /** The level's site-config directory. */
  readonly configDir: string;
  /** config/site.yaml, config/secrets.yaml, config/secrets.yaml.enc */
  readonly siteYaml: string;
  readonly secretsYaml: string;
  readonly secretsEnc: string;
  /** A step's working directory: a repo's tree, or a path under the root. */
  stepCwd(step: Pick<ConfigureStep, "cwd">): string;
}

/**
 * `repos` is level 0's name -> checkout map (ignored below level 0, where the
 * trees are the level's own under the homestak root).
 */
export function homestakLayout(config: Pick<HsdConfig, "homestak" | "repoNames" | "parent">, repos: Readonly<Record<string, string>> = {}): HomestakLayout {
  const { root, layout } = config.homestak;
  const below = config.parent !== null;
  const names = below ? config.repoNames : Object.keys(repos).length > 0 ? Object.keys(repos) : config.repoNames;
  const worktree = (repo: string): string => {
    if (!below && repos[repo]) return repos[repo]!;
    return join(root, Object.hasOwn(layout, repo) ? layout[repo]! : repo);
  };
  const configRepo = names.find((n) => (Object.hasOwn(layout, n) ? layout[n] : n) === "config");
  const configDir = configRepo ? worktree(configRepo) : join(root, "config");
  return Object.freeze({
    root,
    worktree,
    configRepo,
    configDir,
    siteYaml: join(configDir, "site.yaml"),
    secretsYaml: join(configDir, "secrets.yaml"),
    secretsEnc: join(configDir, "secrets.yaml.enc"),
    stepCwd: (step: Pick<ConfigureStep, "cwd">) => (step.cwd.includes("/") || step.cwd === "." ? join(root, step.cwd) : worktree(step.cwd)),
  });
}
