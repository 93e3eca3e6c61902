// `hsctl logs`: a level's hsd log, read through the tree (relayed by each
// parent), as readable lines or (--json) the level's own JSON lines; -f
// follows until Ctrl-C. Output waits for the terminal or pipe to drain, so a
// slow reader slows the stream instead of growing a buffer. Registered in
// commands/index.ts.
// Imported by: src/cli/commands.

import { InvalidArgumentError } from "../../domain/errors.js";
import type { LogLine } from "../../domain/level-api.js";
import type { EventPhase } from "../../domain/events.js";
import { PHASES } from "../../domain/phases.js";
import type { Command } from "../command.js";
import { LEVEL_HELP, LEVEL_OPTION, levelOption } from "../level-option.js";

const PHASE_NAMES: readonly EventPhase[] = [...PHASES, "teardown"];
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const LEVEL_NAMES: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
/** Fields a readable line leaves out: shown in front, or the same on every line. */
const SHOWN = new Set(["time", "level", "msg", "pid", "lvl", "hostname"]);

/** "10m" -> 600000; also s, h, d. */
export function parseSince(v: string): number {
  const m = /^(\d{1,9})([smhd])$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`--since must be a number and a unit (s, m, h, d), e.g. 10m; got ${JSON.stringify(v.slice(0, 40))}`, { details: { field: "since" } });
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

/** One readable line: time, level path, severity, message, then the other fields as key=value. */
export function renderLogLine(l: LogLine): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(l.json) as Record<string, unknown>;
  } catch {
    return `${l.levelPath.join("/")} ${l.json}\n`;
  }
  const t = new Date(typeof o.time === "number" ? o.time : l.time).toISOString().slice(11, 23);
  const sev = LEVEL_NAMES[Number(o.level)] ?? String(o.level ?? "");
  const rest = Object.entries(o).filter(([k]) => !SHOWN.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  return `${t} ${l.levelPath.join("/")} ${sev.padEnd(5)} ${String(o.msg ?? "")}${rest.length > 0 ? `  ${rest.join(" ")}` : ""}\n`;
}

export const logsCommand: Command = {
  name: "logs",
  summary: "show (or follow) a level's hsd log",
  help: `Usage: hsctl logs [--level PATH] [-f] [--since DURATION] [--phase PHASE] [--json]

Prints the hsd log of the level hsctl talks to, or of a level below it
(--level), read through each parent: the operator needs no route to that
level. The log is redacted where it was written: a secret never leaves its
level. Each level keeps its recent log lines (about 2 MiB).

Options:
${LEVEL_HELP}
  -f, --follow   keep printing new lines until Ctrl-C
  --since D      only lines from the last D (e.g. 30s, 10m, 2h, 1d)
  --phase P      only lines about phase P (${PHASE_NAMES.join(", ")})
  --json         the level's own JSON lines, each with "path" (the level path)

Examples:
  hsctl logs --since 10m
  hsctl logs --level l0/l1/l2 -f
  hsctl --host ssh://root@pve1 logs --level l0/l1 --phase sync --json | jq -r .msg
`,
  options: { follow: { type: "boolean", short: "f" }, since: { type: "string" }, phase: { type: "string" }, json: { type: "boolean" }, ...LEVEL_OPTION },
  async run(args, io) {
    const levelPath = levelOption(args.values);
    const since = args.values.since !== undefined ? parseSince(String(args.values.since)) : undefined;
    const phase = args.values.phase as string | undefined;
    if (phase !== undefined && !(PHASE_NAMES as readonly string[]).includes(phase)) {
      throw new InvalidArgumentError(`--phase must be one of ${PHASE_NAMES.join(", ")}; got ${JSON.stringify(phase.slice(0, 40))}`, { details: { field: "phase" } });
    }
    const follow = Boolean(args.values.follow);
    const conn = await args.connect();
    const lines = conn.nest.logs({
      follow, ...(levelPath ? { levelPath } : {}), ...(since !== undefined ? { sinceAgoMs: since } : {}),
      ...(phase ? { phase: phase as EventPhase } : {}),
    }, { signal: io.signal });
    try {
      for await (const l of lines) {
        if (l.dropped > 0) io.err(`hsctl: ${l.levelPath.join("/")}: ${l.dropped} line(s) skipped: this reader fell behind\n`);
        io.out(args.values.json ? `{"path":${JSON.stringify(l.levelPath.join("/"))},${l.json.slice(1)}\n` : renderLogLine(l));
        await io.outReady?.();
      }
    } catch (err) {
      // Ctrl-C is how a follow ends: that is success, not an interruption.
      if (follow && io.signal.aborted) return 0;
      throw err;
    }
    return 0;
  },
};
