// `hsctl destroy`: tear down every level below the local hsd, deepest first,
// and stop a level-0 hsd that hsctl started. Idempotent. Registered in
// commands/index.ts.
// Imported by: src/cli/commands.

import type { Command } from "../command.js";
import { streamEvents } from "./stream-events.js";
import { ensureDaemon, offlineTeardown } from "./ensure-daemon.js";
import { DaemonUnreachableError, InvalidArgumentError } from "../../domain/errors.js";
import { DEFAULTS } from "../../config/config.js";
import { defaultUserRoot, userLevelZeroPid, waitForExit } from "../level-zero.js";
import { LEVEL_HELP, LEVEL_OPTION, levelOption } from "../level-option.js";

export const destroyCommand: Command = {
  name: "destroy",
  summary: "tear down every level below this one",
  help: `Usage: hsctl destroy [-M NAME | --level PATH] [--json]

Tears down the tree below the local hsd, deepest level first: each level's
hsd is stopped, its network namespace and directory removed. A level-0 hsd
that hsctl started for you (under $HSD_ROOT, default ./.hsd) is stopped too.
Running it again is a no-op that exits 0. If that hsd is not running, its
levels are found from the journals on disk and stopped all the same.

With -M NAME, only the levels manifest NAME built are torn down (each with
everything below it); other trees and level 0 keep running. With --level,
only that level and the levels below it go (its parent tears them down);
everything else stays.

Options:
  -M, --manifest-name NAME   only the tree manifest NAME built
${LEVEL_HELP}
  --json                     one JSON object per event (JSON Lines)

Examples:
  hsctl destroy
  hsctl destroy -M n3-deep
  hsctl destroy --level l0/l1/l2
`,
  options: { json: { type: "boolean" }, "manifest-name": { type: "string", short: "M" }, ...LEVEL_OPTION },
  async run(args, io) {
    const manifest = args.values["manifest-name"] as string | undefined;
    const levelPath = levelOption(args.values);
    if (manifest !== undefined && levelPath) throw new InvalidArgumentError("-M and --level each pick what to destroy: give one", { details: { field: "level" } });
    if (manifest !== undefined) {
      if (manifest === "") throw new InvalidArgumentError("-M needs a manifest name", { details: { field: "manifest-name" } });
      const conn = await ensureDaemon(args, io, { start: false });
      return (await streamEvents(conn.nest.destroy({ self: false, manifest }, { signal: io.signal }), io, Boolean(args.values.json), "destroy")).code;
    }
    if (levelPath) {
      if (levelPath.length < 2) throw new InvalidArgumentError("--level for destroy names a level below the one hsctl talks to (e.g. l0/l1); leave it out to tear down the whole tree");
      const conn = await ensureDaemon(args, io, { start: false });
      return (await streamEvents(conn.nest.destroy({ self: false, levelPath }, { signal: io.signal }), io, Boolean(args.values.json), "destroy")).code;
    }
    let conn;
    try {
      conn = await ensureDaemon(args, io, { start: false });
    } catch (err) {
      if (!(err instanceof DaemonUnreachableError) || args.explicitTarget) throw err;
      const n = await offlineTeardown(io);
      io.err(n > 0 ? `hsctl: no hsd running; stopped ${n} leftover level(s) from the journals on disk\n` : "hsctl: nothing to destroy\n");
      return 0;
    }
    const self = !args.explicitTarget; // a level 0 that hsctl started for this user goes too
    const pid = self ? await userLevelZeroPid(defaultUserRoot(io.env)) : undefined;
    const code = (await streamEvents(conn.nest.destroy({ self }, { signal: io.signal }), io, Boolean(args.values.json), "destroy")).code;
    // The stream ends before that hsd has finished stopping: done means gone.
    if (code === 0 && pid !== undefined && !(await waitForExit(pid, DEFAULTS.shutdownMs + 2_000))) {
      io.err(`hsctl: the level-0 hsd (pid ${pid}) is still stopping after ${(DEFAULTS.shutdownMs + 2_000) / 1000} s\n`);
      return 1;
    }
    return code;
  },
};
