// `hsctl sync`: refresh level 0's exports from the operator's checkouts and
// send the change down the whole tree in a wave. Registered in
// commands/index.ts.
// Imported by: src/cli/commands.

import type { Command } from "../command.js";
import { streamEvents } from "./stream-events.js";
import { ensureDaemon } from "./ensure-daemon.js";
import { LEVEL_HELP, LEVEL_OPTION, levelOption } from "../level-option.js";

export const syncCommand: Command = {
  name: "sync",
  summary: "push the operator's current code to every level",
  help: `Usage: hsctl sync [--level PATH] [--configure] [--json]

Level 0 snapshots the operator's checkouts (committed work plus a _working
snapshot of uncommitted edits, ignored files excluded), then every level
fetches from its parent in a wave down the tree. Only new objects move. A
level that is down is reported and its subtree marked stale; the rest go on.
Local edits in a level's checkout are never overwritten. With --level, only
that level (from its parent, as it is now) and the levels below it.

With --configure, each level below 0 re-runs all its configure steps
(configure.steps) from the trees it just synced, then the wave goes on: edit
a playbook at level 0 and re-apply it everywhere with one command.

Options:
${LEVEL_HELP}
  --configure    re-run every level's configure steps after its sync
  --json         one JSON object per event (JSON Lines), with bytes moved and commits

Examples:
  hsctl sync
  hsctl sync --configure
  hsctl sync --level l0/l1/l2
  hsctl sync --json | jq -c 'select(.kind=="finished") | {level, bytes}'
`,
  options: { json: { type: "boolean" }, configure: { type: "boolean" }, ...LEVEL_OPTION },
  async run(args, io) {
    const levelPath = levelOption(args.values);
    const conn = await ensureDaemon(args, io, { start: false });
    return (await streamEvents(conn.nest.sync({ recursive: true, configure: Boolean(args.values.configure), ...(levelPath ? { levelPath } : {}) }, { signal: io.signal }), io, Boolean(args.values.json), "sync")).code;
  },
};
