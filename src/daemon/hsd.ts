// Entry point of the hsd daemon: `hsd run | version | --help`. Parses the
// command line, hands everything else to wiring.ts, turns failures into one
// line plus a hint, and maps them to exit codes. Run as a program (bin/hsd.js,
// node dist/daemon/hsd.js).
//
// Exit codes: 0 ok / clean shutdown, 1 failure, 2 usage error,
// 78 config invalid (EX_CONFIG; the unit does not restart on it).
// Imported by: nothing in src (an entry point that bin/ or the bundled dist/ entries load).

import { parseArgs } from "node:util";
import { HsError } from "../domain/errors.js";
import { formatError, hintFor } from "../domain/hints.js";
import { announceFailure } from "./ready.js";
import { HSD_VERSION } from "./version.js";
import { startDaemon, type Daemon } from "./wiring.js";
import { takeServiceManager } from "../util/systemd-env.js";
import { rebootLocalLevel } from "../providers/local/local-reboot.js";
import { createLogger } from "../log/logger.js";

const HELP = `hsd ${HSD_VERSION}: the homestak recursive nesting daemon

One hsd runs on every level of a nested environment. It serves the
homestak.nest.v1 gRPC API on a unix socket (for hsctl) and builds the levels
below it when asked. Talk to it with hsctl.

Usage:
  hsd run [--root DIR] [--config FILE]   serve until SIGTERM/SIGINT
  hsd version                            print the version
  hsd reboot-level --root DIR [--grace-ms N]
                                         reboot a local child level: stop all it
                                         runs, start its hsd again (what its
                                         configure runs when a step asks for a
                                         reboot; a step may run it to reboot
                                         its level itself, as systemctl reboot)
  hsd --help                             this text

Modes:
  hsd run --root ./.hsd     a level rooted in a directory: config DIR/hsd.yaml,
                            socket DIR/run/hsd.sock, state under DIR; unless
                            ssh.port is set, SSH on a free port (in ready.json)
  hsd run                   system service: config /etc/homestak/hsd.yaml,
                            socket /run/hsd/hsd.sock, state /var/lib/hsd, SSH on 2222

Examples:
  mkdir -p ./.hsd && hsd run --root ./.hsd &
  hsctl --root ./.hsd status
  systemctl start hsd && hsctl status

Readiness: once listening, hsd writes DIR/run/ready.json, a line to the fd in
HSD_READY_FD (if set) and notifies systemd (if NOTIFY_SOCKET is set), then
pings systemd's watchdog (if WATCHDOG_USEC is set). No child process inherits
systemd's variables; as a unit, child levels run in scopes of their own.
If it cannot start, it writes {"error": {code, message, hint}} to HSD_READY_FD instead.
Logs: JSON lines on stdout; HSD_LOG_PRETTY=1 for human-readable output.
Every config key: daemon/hsd.example.yaml.
`;

const EXIT_USAGE = 2;
const EXIT_CONFIG = 78;

function fail(err: unknown): never {
  if (err instanceof HsError) {
    // stdout carries JSON log lines, so the failure goes there in that shape too (for supervisors).
    process.stdout.write(`${JSON.stringify({ level: 50, time: Date.now(), pid: process.pid, code: err.code, msg: err.message })}\n`);
    process.stderr.write(`${formatError("hsd", err.code, err.message)}\n`);
    // Whoever started us (hsctl, a parent) reports our error, not a guess.
    const hint = hintFor(err.code);
    announceFailure(process.env, { code: err.code, message: err.message, ...(hint ? { hint } : {}), details: err.details });
    process.exit(err.code === "ConfigInvalid" ? EXIT_CONFIG : 1);
  }
  process.stderr.write(`hsd: unexpected failure: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  announceFailure(process.env, { code: "Internal", message: `unexpected failure: ${err instanceof Error ? err.message : String(err)}` });
  process.exit(1);
}

function usage(message: string): never {
  process.stderr.write(`hsd: ${message}\nRun \`hsd --help\` for usage.\n`);
  process.exit(EXIT_USAGE);
}

async function run(args: string[]): Promise<void> {
  let values: { root?: string; config?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args, allowPositionals: false, strict: true,
      options: { root: { type: "string" }, config: { type: "string" }, help: { type: "boolean", short: "h" } },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (values.help) { process.stdout.write(HELP); return; }

  // Handlers go in before startup: readiness is announced inside startDaemon,
  // and a supervisor may send SIGTERM the moment it sees it.
  let daemon: Daemon | undefined;
  let pending: NodeJS.Signals | undefined;
  let sigCount = 0;
  const stopOn = (d: Daemon, sig: NodeJS.Signals) => {
    // A wedged shutdown must still end: the grace period plus a margin.
    setTimeout(() => { d.log.error("shutdown overran; exiting"); process.exit(1); }, d.config.timeouts.shutdownMs + 1000).unref();
    void d.stop(`signal ${sig}`);
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (sigCount++ > 0) {
      daemon?.log.warn({ signal: sig }, "second signal: exiting now");
      process.exit(1);
    }
    if (daemon) stopOn(daemon, sig);
    else pending = sig;
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  // Only this process talks to systemd: nothing it spawns may inherit the contract.
  const serviceManager = takeServiceManager(process.env, process.pid);
  try {
    daemon = await startDaemon({
      serviceManager,
      ...(values.root !== undefined ? { root: values.root } : {}),
      ...(values.config !== undefined ? { configFile: values.config } : {}),
      env: process.env,
    });
  } catch (err) {
    fail(err);
  }
  const d = daemon;
  process.on("uncaughtException", (err) => {
    d.log.fatal({ err }, "uncaught exception");
    void d.stop("uncaught exception").finally(() => process.exit(1));
  });
  if (pending) stopOn(d, pending);
  await d.stopped;
  // Flush pino before leaving; logs are the record of why the daemon stopped.
  await new Promise<void>((r) => d.log.flush(() => r()));
  process.exit(0);
}

/** A local level's machine reboot (src/providers/local/local-reboot.ts); its hsd starts this detached. */
async function rebootLevel(args: string[]): Promise<void> {
  let values: { root?: string; "grace-ms"?: string };
  try {
    ({ values } = parseArgs({ args, allowPositionals: false, strict: true, options: { root: { type: "string" }, "grace-ms": { type: "string" } } }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (!values.root) usage("reboot-level needs --root DIR");
  const graceMs = Number(values["grace-ms"] ?? "4000");
  if (!Number.isInteger(graceMs) || graceMs < 0) usage("--grace-ms takes a whole number of milliseconds");
  const log = createLogger({ base: { pid: process.pid, sub: "reboot-level" } });
  await rebootLocalLevel(values.root, { graceMs, log, env: process.env });
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "run": return run(rest);
    case "reboot-level": return rebootLevel(rest);
    case "version": case "--version": case "-v":
      process.stdout.write(`hsd ${HSD_VERSION}\n`);
      return;
    case undefined: case "help": case "--help": case "-h":
      process.stdout.write(HELP);
      return;
    default:
      usage(`unknown command ${JSON.stringify(cmd)}`);
  }
}

main(process.argv.slice(2)).catch(fail);
