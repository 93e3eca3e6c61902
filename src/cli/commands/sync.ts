// `hsctl sync`: refresh level 0's exports from the operator's checkouts and
// send the change down the whole tree in a wave. Registered in
// commands/index.ts.
// Imported by: src/cli/commands.

import type { Command } from "../command.js";
import { streamEvents } from "./stream-events.js";
import { ensureDaemon } from "./ensure-daemon.js";

export const syncCommand: Command = {
  name: "sync",
  summary: "push the operator's current code to every level",
  help: `Usage: hsctl sync [--configure] [--json]

Level 0 snapshots the operator's checkouts (committed work plus a _working
snapshot of uncommitted edits, ignored files excluded), then every level
fetches from its parent in a wave down the tree. Only new objects move. A
level that is down is reported and its subtree marked stale; the rest go on.
Local edits in a level's checkout are never overwritten.

With --configure, each level below 0 re-runs all its configure steps
(configure.steps) from the trees it just synced, then the wave goes on: edit
a playbook at level 0 and re-apply it everywhere with one command.

Options:
  --configure  re-run every level's configure steps after its sync
  --json   one JSON object per event (JSON Lines), with bytes moved and commits

Examples:
  hsctl sync
  hsctl sync --configure
  hsctl sync --json | jq -c 'select(.kind=="finished") | {level, bytes}'
`,
  options: { json: { type: "boolean" }, configure: { type: "boolean" } },
  async run(args, io) {
    const conn = await ensureDaemon(args, io, { start: false });
    return (await streamEvents(conn.nest.sync({ recursive: true, configure: Boolean(args.values.configure) }, { signal: io.signal }), io, Boolean(args.values.json), "sync")).code;
  },
};
