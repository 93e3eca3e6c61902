// Reaching the local hsd for the build commands: when nothing names a daemon
// explicitly and none answers, nest starts a user level 0 under $HSD_ROOT
// (default ./.hsd); destroy can clean up a dead one's levels from disk.
// Imported by: src/cli/commands.

import { lstat, readdir, rm } from "node:fs/promises";
import { DaemonUnreachableError, errorCode } from "../../domain/errors.js";
import { levelPaths } from "../../config/level-layout.js";
import { DEFAULTS } from "../../config/config.js";
import type { CliIo, CommandArgs } from "../command.js";
import type { Connection } from "../connect.js";
import { defaultUserRoot, startUserLevelZero } from "../level-zero.js";

async function answers(conn: Connection): Promise<boolean> {
  try {
    await conn.nest.identify({ deadlineMs: conn.unaryDeadlineMs });
    return true;
  } catch (err) {
    if (errorCode(err) === "DaemonUnreachable" || errorCode(err) === "PeerGone") return false;
    throw err;
  }
}

/** Nothing at `path` (not even a stale socket file): no daemon can answer a dial there. */
async function absent(path: string): Promise<boolean> {
  return lstat(path).then(() => false, (err: NodeJS.ErrnoException) => err.code === "ENOENT");
}

export async function ensureDaemon(args: CommandArgs, io: CliIo, o: { start: boolean }): Promise<Connection> {
  if (o.start && !args.explicitTarget) {
    // No socket where hsctl would dial: start level 0 at once, without a dial
    // that can only fail, and load the clients while that daemon boots.
    const socket = await args.localSocket();
    if (socket !== undefined && await absent(socket)) return startLevelZero(args, io);
  }
  const conn = await args.connect();
  if (await answers(conn)) return conn;
  if (!o.start || args.explicitTarget) throw new DaemonUnreachableError(`no hsd answers at ${conn.socket}`);
  return startLevelZero(args, io);
}

async function startLevelZero(args: CommandArgs, io: CliIo): Promise<Connection> {
  const root = defaultUserRoot(io.env);
  io.err(`hsctl: no hsd running; starting a level-0 hsd at ${root} (log: ${levelPaths(root).log})\n`);
  const started = await startUserLevelZero(root, { whileStarting: () => args.loadClients() });
  return args.connectTo(started.socket);
}

/** Stops every level found under the user's level-0 root without its daemon. Returns how many. */
export async function offlineTeardown(io: CliIo): Promise<number> {
  const root = defaultUserRoot(io.env);
  const levels = await readdir(levelPaths(root).levelsDir).catch(() => [] as string[]);
  // Loaded here only: hsctl's other commands need none of it.
  const [{ silentLogger }, { killLevelTree }, { levelNetnsOps }] = await Promise.all([
    import("../../log/logger.js"), import("../../providers/local/level-process.js"), import("../../providers/local/level-netns.js"),
  ]);
  const netns = process.getuid?.() === 0 ? levelNetnsOps({ subnetBase: DEFAULTS.subnetBase, log: silentLogger() }) : null;
  await killLevelTree(root, DEFAULTS.shutdownMs, netns, silentLogger(), { keepDir: true });
  await rm(levelPaths(root).levelsDir, { recursive: true, force: true });
  return levels.length;
}
