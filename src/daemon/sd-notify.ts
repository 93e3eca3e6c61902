// Talks to systemd for the service's main process only: READY=1, STOPPING=1
// and watchdog pings from the event loop. Node has no AF_UNIX datagram
// sockets, so each message goes through systemd-notify --pid=<our pid>: as root
// it sends the datagram with our PID as the sender (SCM_CREDENTIALS) and
// MAINPID=<our pid>, which NotifyAccess=main accepts. --no-block: no BARRIER=1
// round trip, which would come from the helper's own PID and be refused (and
// logged) under NotifyAccess=main.
// Imported by: src/daemon.

import { spawn } from "node:child_process";
import type { Logger } from "../log/logger.js";
import type { ServiceManager } from "../util/systemd-env.js";

/** Runs systemd-notify; resolves with its exit code (-1 if it could not start). Injected by tests. */
export type NotifyRunner = (args: readonly string[], env: Record<string, string>) => Promise<number>;

const runSystemdNotify: NotifyRunner = (args, env) => new Promise((resolve) => {
  const p = spawn("systemd-notify", args, { stdio: "ignore", env });
  p.on("error", () => resolve(-1));
  p.on("exit", (code) => resolve(code ?? -1));
});

export interface SdNotifier {
  ready(): Promise<void>;
  stopping(): Promise<void>;
  /** Starts the pings when the manager asked for them; the returned function stops them. */
  startWatchdog(): () => void;
}

export function sdNotifier(o: { manager: ServiceManager; pid: number; log: Logger; run?: NotifyRunner }): SdNotifier {
  const run = o.run ?? runSystemdNotify;
  const socket = o.manager.notifySocket;
  const send = async (what: string, args: string[]): Promise<void> => {
    if (!socket) return;
    // The helper gets NOTIFY_SOCKET and PATH only: nothing else of ours.
    const code = await run([`--pid=${o.pid}`, "--no-block", ...args], { NOTIFY_SOCKET: socket, PATH: process.env.PATH ?? "/usr/bin:/bin" });
    if (code !== 0) o.log.warn({ what, code }, "systemd-notify failed");
  };
  return {
    ready: () => send("ready", ["--ready"]),
    stopping: () => send("stopping", ["STOPPING=1"]),
    startWatchdog: () => {
      const every = o.manager.watchdogPingMs;
      if (!socket || every === undefined) return () => {};
      o.log.info({ pingMs: every }, "systemd watchdog enabled");
      // A timer on the event loop: when the loop hangs the pings stop, and systemd restarts us.
      let inFlight = false;
      const t = setInterval(() => {
        if (inFlight) return;
        inFlight = true;
        void send("watchdog", ["WATCHDOG=1"]).finally(() => { inFlight = false; });
      }, every);
      t.unref();
      return () => clearInterval(t);
    },
  };
}
