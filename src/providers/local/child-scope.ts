// Where a local child hsd runs when level 0 is a systemd service: its own
// transient scope in hsd-levels.slice, outside hsd.service's cgroup, so a
// stop, restart, upgrade or crash of the service (and its KillMode) never
// reaches the subtree; `hsctl destroy` still stops it by PID. The daemon's
// wiring decides whether we run under systemd; the registry passes it on.
// Imported by: src/providers.

import { randomBytes } from "node:crypto";

/** The slice every child level's scope goes in (created by systemd on first use). */
export const CHILD_SLICE = "hsd-levels.slice";

/** A scope unit name for a level path, unique per spawn (a dying scope of the same level may linger). */
export function childScopeName(levelPath: readonly string[]): string {
  const path = levelPath.map((p) => p.replace(/[^A-Za-z0-9_-]/g, "_")).join("-").slice(0, 180);
  return `hsd-level-${path}-${randomBytes(4).toString("hex")}.scope`;
}

/**
 * argv prefix that runs a command in a new scope: `systemd-run --scope` asks PID 1
 * for the scope, moves itself into it and then execs the command, so the PID, the
 * process group and the inherited fds (the ready pipe) stay those spawn() made.
 */
export function systemdScopePrefix(levelPath: readonly string[]): string[] {
  return [
    "systemd-run", "--scope", "--quiet", "--collect", `--slice=${CHILD_SLICE}`,
    `--unit=${childScopeName(levelPath)}`, `--description=hsd level ${levelPath.join("/")}`, "--",
  ];
}
