// `hsctl version`: the client's version and the local daemon's. Registered in
// commands/index.ts.
// Imported by: src/cli/commands.

import { HSD_VERSION } from "../../daemon/version.js";
import type { Command } from "../command.js";

export const versionCommand: Command = {
  name: "version",
  summary: "print hsctl's and the daemon's versions",
  help: `Usage: hsctl version [--json]

Prints this hsctl's version, then asks the local hsd for its own. Levels
may run different versions; each reports its own in \`hsctl status\`.

Examples:
  hsctl version
  hsctl version --json
`,
  options: { json: { type: "boolean" } },
  async run(args, io) {
    if (!args.values.json) io.out(`hsctl ${HSD_VERSION}\n`);
    const conn = await args.connect();
    const id = await conn.nest.identify({ deadlineMs: conn.unaryDeadlineMs, signal: io.signal });
    if (args.values.json) io.out(`${JSON.stringify({ client: HSD_VERSION, daemon: id.hsdVersion, level: id.name, socket: conn.socket })}\n`);
    else io.out(`hsd ${id.hsdVersion} (level ${id.name} at ${conn.socket})\n`);
    return 0;
  },
};
