// The part of a process environment that belongs to systemd's service
// contract (notify socket, watchdog, socket activation, invocation, journal
// stream, unit directories), and what hsd learns from it. Only the service's
// own process may act on it, so hsd takes it out of its environment at start
// and every child gets an environment without it.
// Imported by: src/daemon, src/providers/local.

import { existsSync } from "node:fs";

/** Set by systemd for a service's main process (systemd.exec(5) "Environment variables in spawned processes"). */
const SERVICE_VARS = new Set([
  "NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM", "MAINPID", "MANAGERPID", "SYSTEMD_EXEC_PID",
  "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "CACHE_DIRECTORY", "LOGS_DIRECTORY", "CONFIGURATION_DIRECTORY",
  "CREDENTIALS_DIRECTORY", "SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS", "PIDFILE", "FDSTORE",
  "REMOTE_ADDR", "REMOTE_PORT",
]);
/** Whole families: socket activation, watchdog, OnFailure=/OnSuccess= monitors, path/timer triggers. */
const SERVICE_PREFIXES = ["LISTEN_", "WATCHDOG_", "MONITOR_", "TRIGGER_"];

export function isSystemdServiceVar(name: string): boolean {
  return SERVICE_VARS.has(name) || SERVICE_PREFIXES.some((p) => name.startsWith(p));
}

/** A copy of env without any systemd service variable: what every child process gets. */
export function withoutSystemdEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !isSystemdServiceVar(k)) out[k] = v;
  return out;
}

/** What hsd's service manager asked of this process (all absent outside systemd). */
export interface ServiceManager {
  /** sd_notify(3) target; readiness, STOPPING and watchdog pings go there. */
  readonly notifySocket?: string;
  /** Ping interval: half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; absent = no watchdog for us. */
  readonly watchdogPingMs?: number;
  /** Set when this process runs as a systemd unit (INVOCATION_ID). */
  readonly invocationId?: string;
  /** PID 1 is systemd (sd_booted(3): /run/systemd/system exists). */
  readonly booted: boolean;
}

/**
 * Reads the service contract for process `pid`: WATCHDOG_USEC applies only when
 * WATCHDOG_PID is unset or names this process (sd_watchdog_enabled(3)).
 */
export function serviceManagerFrom(env: NodeJS.ProcessEnv, pid: number, booted = existsSync("/run/systemd/system")): ServiceManager {
  const usec = Number(env.WATCHDOG_USEC);
  const forUs = env.WATCHDOG_PID === undefined || env.WATCHDOG_PID === "" || Number(env.WATCHDOG_PID) === pid;
  return {
    ...(env.NOTIFY_SOCKET ? { notifySocket: env.NOTIFY_SOCKET } : {}),
    ...(forUs && Number.isSafeInteger(usec) && usec > 0 ? { watchdogPingMs: Math.max(1, Math.floor(usec / 2000)) } : {}),
    ...(env.INVOCATION_ID ? { invocationId: env.INVOCATION_ID } : {}),
    booted,
  };
}

/**
 * Reads the contract, then deletes it from env (sd_notify's unset_environment):
 * nothing this process spawns later (git, ssh-keygen, a child hsd) inherits it.
 */
export function takeServiceManager(env: NodeJS.ProcessEnv, pid: number): ServiceManager {
  const m = serviceManagerFrom(env, pid);
  for (const k of Object.keys(env)) if (isSystemdServiceVar(k)) delete env[k];
  return m;
}
