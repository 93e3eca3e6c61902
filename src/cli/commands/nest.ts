// `hsctl nest`: build levels below the local hsd and watch them come up. Starts
// a level-0 hsd for the user when none is reachable. Registered in
// commands/index.ts.
// Imported by: src/cli/commands.

import { InvalidArgumentError } from "../../domain/errors.js";
import type { Command } from "../command.js";
import { streamEvents } from "./stream-events.js";
import { ensureDaemon } from "./ensure-daemon.js";
import { isProviderName, PROVIDER_NAMES } from "../../domain/providers.js";
import { ISOLATION_MODES, isIsolationMode } from "../../providers/local/local-options.js";

function intOpt(v: unknown, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

export const nestCommand: Command = {
  name: "nest",
  summary: "build N nested levels below this one, live",
  help: `Usage: hsctl nest --depth N [--width W] [--provider local|pve] [--isolation process|netns] [--json]

Builds N levels below the local hsd: each level's hsd creates the next level,
installs hsd in it, lets it clone the repos over SSH git, hands it its scoped
secrets and asks it to build the rest. Progress streams up live.

If no hsd is reachable (and no --socket/--root/HSD_SOCKET names one), hsctl
starts a level-0 hsd for you under $HSD_ROOT (default ./.hsd); with no repos
configured it exports a generated demo set. \`hsctl destroy\` stops it again.

Re-running the same nest resumes: finished phases are reported as skipped,
a dead level is restarted from its install phase.

Options:
  --depth N          levels to build below this one (1..8, default 1)
  --width W          children per level (1..8, default 1)
  --provider NAME    local (default: a process per level) or pve (a VM per level)
  --isolation MODE   process (default) or netns (root: a network namespace and
                     veth /30 per level, so a level reaches only its parent)
  --json             one JSON object per event (JSON Lines)

Output: a live tree on a terminal; piped, one line per phase change and at
most one progress line per level per second (--json keeps every event); then
a table of every level x phase with its time against its budget. Exit 1
names the level and phase that failed.

Examples:
  hsctl nest --depth 3
  hsctl nest --depth 2 --width 3
  sudo hsctl nest --depth 3 --isolation netns --json | jq -c 'select(.kind=="failed")'
`,
  options: {
    depth: { type: "string" }, width: { type: "string" }, provider: { type: "string" },
    isolation: { type: "string" }, json: { type: "boolean" },
  },
  async run(args, io) {
    const depth = intOpt(args.values.depth, "depth", 1, 1, 8);
    const width = intOpt(args.values.width, "width", 1, 1, 8);
    const provider = (args.values.provider as string | undefined) ?? "";
    if (provider && !isProviderName(provider)) throw new InvalidArgumentError(`--provider must be ${PROVIDER_NAMES.join(" or ")}, got ${JSON.stringify(provider)}`);
    const iso = (args.values.isolation as string | undefined) ?? "process";
    if (!isIsolationMode(iso)) throw new InvalidArgumentError(`--isolation must be ${ISOLATION_MODES.join(" or ")}, got ${JSON.stringify(iso)}`);
    const conn = await ensureDaemon(args, io, { start: true });
    const stream = conn.nest.nest({
      depth, width, provider, options: { isolation: iso },
    }, { signal: io.signal });
    return (await streamEvents(stream, io, Boolean(args.values.json), "nest")).code;
  },
};
