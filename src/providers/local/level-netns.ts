// NetnsOps for the local provider, on top of netns.ts (iproute2 + nsenter).
// Imported by: src/cli/commands, src/providers.

import type { Logger } from "../../log/logger.js";
import { runCommand, type CommandRunner } from "../../util/command-runner.js";
import { canUseNetns, createLevelNetns, destroyLevelNetns, execPrefix, levelNetnsName } from "./netns.js";
import type { NetnsInfo, NetnsOps } from "./netns-ops.js";

export function levelNetnsOps(opts: { subnetBase: string; log: Logger; run?: CommandRunner; commandTimeoutMs?: number }): NetnsOps {
  const run = opts.run ?? runCommand;
  return {
    available: () => canUseNetns(run),
    async create(levelPath, signal): Promise<NetnsInfo> {
      const h = await createLevelNetns({
        name: levelNetnsName(levelPath), subnetBase: opts.subnetBase, levelPath: [...levelPath], run, log: opts.log, signal,
        commandTimeoutMs: opts.commandTimeoutMs,
      });
      return { nsName: h.nsName, parentAddr: h.parentAddr, childAddr: h.childAddr };
    },
    execPrefix,
    async destroy(nsName) {
      await destroyLevelNetns(nsName, run, opts.log);
    },
  };
}
