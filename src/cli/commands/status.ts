// `hsctl status`: the tree of levels below the local hsd, as an indented
// tree or (--json) the domain LevelStatus. Registered in commands/index.ts.

import { fromProtoStatus } from "../../api/convert.js";
import { HsError } from "../../errors/hs-error.js";
import type { LevelStatus } from "../../nest/events.js";
import type { Command } from "../command.js";

/** One line per level plus an indented repo line, children nested below with tree glyphs. */
export function renderStatus(root: LevelStatus): string {
  const lines: string[] = [];
  const walk = (s: LevelStatus, prefix: string, childPrefix: string) => {
    const parts = [s.name, s.state, s.address || "-", s.hsdVersion ? `hsd ${s.hsdVersion}` : "hsd ?", s.hostKeyFingerprint || "-"];
    if (s.outOfSync) parts.push("(out of sync)");
    lines.push(`${prefix}${parts.join("  ")}`);
    if (s.failure) lines.push(`${childPrefix}  ${s.failure.code}: ${s.failure.message}`);
    const repos = s.repos.map((r) => `${r.name}@${(r.servedCommit || r.worktreeCommit || "-").slice(0, 8)}${r.dirty ? "*" : ""}`);
    lines.push(`${childPrefix}  repos: ${repos.length > 0 ? repos.join(" ") : "none"}`);
    s.children.forEach((c, i) => {
      const last = i === s.children.length - 1;
      walk(c, `${childPrefix}${last ? "└─ " : "├─ "}`, `${childPrefix}${last ? "   " : "│  "}`);
    });
  };
  walk(root, "", "");
  return `${lines.join("\n")}\n`;
}

export const statusCommand: Command = {
  name: "status",
  summary: "show this level and every level below it",
  help: `Usage: hsctl status [--json]

Shows the level served by the local hsd and the tree of levels below it:
name, state, SSH address, hsd version, host key fingerprint and the commit
each repo is at (* = local edits). Children are indented under their parent.

Options:
  --json    print the status tree as JSON (for scripts)

Examples:
  hsctl status
  hsctl --root ./.hsd status --json | jq '.children[].state'
`,
  options: { json: { type: "boolean" } },
  async run(args, io) {
    const conn = await args.connect();
    const res = await conn.nest.status({}, { deadlineMs: conn.unaryDeadlineMs, signal: io.signal });
    if (!res.root) throw new HsError("hsd answered without a status tree");
    const status = fromProtoStatus(res.root);
    io.out(args.values.json ? `${JSON.stringify(status)}\n` : renderStatus(status));
    return 0;
  },
};
