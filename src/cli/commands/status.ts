// `hsctl status`: the tree of levels below the local hsd, as an indented tree
// or (--json) the domain LevelStatus. Registered in commands/index.ts.
// Imported by: src/cli/commands.

import { HsError } from "../../domain/errors.js";
import type { LevelStatus } from "../../domain/level-api.js";
import type { RepoState } from "../../domain/events.js";
import type { Command } from "../command.js";
import { LEVEL_HELP, LEVEL_OPTION, levelOption } from "../level-option.js";
import { LevelNotFoundError } from "../../domain/errors.js";

/**
 * A level against its parent, from the parent's per-repo attestation:
 * diverged if any repo is, else behind by the sum over repos, else in sync.
 * Level 0 is the source everything is compared with.
 */
export function syncSummary(s: LevelStatus, isRoot: boolean): string {
  if (isRoot) return "source";
  if (s.leaf) return "leaf: configured by its parent";
  let verdict = "in sync";
  const behind = s.repos.reduce((n, r) => n + (r.syncState === "behind" ? Math.max(1, r.behind ?? 0) : 0), 0);
  if (s.repos.some((r) => r.syncState === "diverged")) verdict = "diverged";
  else if (behind > 0) verdict = `behind (${behind} commit${behind === 1 ? "" : "s"})`;
  else if (s.outOfSync) verdict = "out of sync";
  // Unreachable: judged on what it last reported, and its subtree is stale.
  if (s.state === "unreachable") return s.repos.some((r) => r.syncState) ? `unreachable; last known ${verdict}; subtree stale` : "unreachable; subtree stale";
  return verdict;
}

function repoCell(r: RepoState, isRoot: boolean): string {
  let c = `${r.name}@${(r.servedCommit || r.worktreeCommit || "-").slice(0, 8)}`;
  if (r.syncState === "behind") c += `(-${r.behind ?? "?"})`;
  if (r.syncState === "diverged") c += "(diverged)";
  // The working tree is held behind what is served (local edits, or a path in the way).
  if (!isRoot && r.worktreeCommit && r.servedCommit && r.worktreeCommit !== r.servedCommit) c += ` wt@${r.worktreeCommit.slice(0, 8)}`;
  return r.dirty ? `${c}*` : c;
}

/** One line per level plus indented repo lines, children nested below with tree glyphs. */
export function renderStatus(root: LevelStatus, rootIsSource = true): string {
  const lines: string[] = [];
  const walk = (s: LevelStatus, prefix: string, childPrefix: string, isRoot: boolean) => {
    const dirty = s.repos.some((r) => r.dirty) ? ", dirty" : "";
    const parts = s.leaf
      ? [s.name, s.state, "[vm leaf, no hsd]", s.address || "-"]
      : [s.name, s.state, `[${syncSummary(s, isRoot)}${dirty}]`, s.address || "-", s.hsdVersion ? `hsd ${s.hsdVersion}` : "hsd ?", s.hostKeyFingerprint || "-"];
    lines.push(`${prefix}${parts.join("  ")}`);
    if (s.failure) lines.push(`${childPrefix}  ${s.failure.code}: ${s.failure.message}`);
    if (!s.leaf) lines.push(`${childPrefix}  repos: ${s.repos.length > 0 ? s.repos.map((r) => repoCell(r, isRoot)).join(" ") : "none"}`);
    for (const r of s.repos.filter((x) => x.dirty)) {
      lines.push(`${childPrefix}  local edits in ${r.name}: ${r.dirtyFiles.slice(0, 8).join(", ")}${r.dirtyFiles.length > 8 ? ", ..." : ""}`);
    }
    s.children.forEach((c, i) => {
      const last = i === s.children.length - 1;
      walk(c, `${childPrefix}${last ? "└─ " : "├─ "}`, `${childPrefix}${last ? "   " : "│  "}`, false);
    });
  };
  walk(root, "", "", rootIsSource);
  return `${lines.join("\n")}\n`;
}

/** The JSON form: the domain tree plus each level's summary (stable field `sync`). */
function statusJson(s: LevelStatus, isRoot: boolean): Record<string, unknown> {
  return { ...s, sync: syncSummary(s, isRoot), dirty: s.repos.some((r) => r.dirty), children: s.children.map((c) => statusJson(c, false)) };
}

export const statusCommand: Command = {
  name: "status",
  summary: "show this level and every level below it",
  help: `Usage: hsctl status [--level PATH] [--json]

Shows the level served by the local hsd and the tree of levels below it:
name, state, how it compares with its parent ([in sync], [behind (N commits)]
or [diverged], computed by the parent from its own history; ", dirty" when
its working tree has local edits), SSH address, hsd version, host key
fingerprint and the commit each repo serves (* = local edits, (-N) = N
commits behind, wt@ = the working tree held at an older commit). Children
are indented under their parent.

With --level, the tree starts at that level, compared with its parent.

Options:
${LEVEL_HELP}
  --json         print the status tree as JSON (for scripts)

Examples:
  hsctl status
  hsctl status --level l0/l1/l2
  hsctl --host ssh://root@pve1 status --json | jq '.children[].state'
`,
  options: { json: { type: "boolean" }, ...LEVEL_OPTION },
  async run(args, io) {
    const path = levelOption(args.values);
    const conn = await args.connect();
    // A level below is asked of its parent, which attests its sync state.
    const asked = path && path.length > 1 ? path.slice(0, -1) : path;
    const tree = await conn.nest.status({ deadlineMs: conn.unaryDeadlineMs, signal: io.signal }, asked);
    if (!tree) throw new HsError("hsd answered without a status tree");
    const status = path && path.length > 1 ? tree.children.find((c) => c.name === path[path.length - 1]) : tree;
    if (!status) throw new LevelNotFoundError(`no level ${path!.join("/")}`, { details: { levelPath: path!.join("/") } });
    const isRoot = !path || path.length === 1;
    io.out(args.values.json ? `${JSON.stringify(statusJson(status, isRoot))}\n` : renderStatus(status, isRoot));
    return 0;
  },
};
