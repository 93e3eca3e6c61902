// Entry point of hsctl, the operator's CLI: global options, the command
// registry (commands/index.ts), one-line errors with hints (messages.ts), exit
// codes. Run as a program (bin/hsctl.js).
//
// Exit codes: 0 ok, 1 failure (printed as one line + hint), 2 usage error,
// 130 interrupted.
// Imported by: nothing in src (an entry point that bin/ or the bundled dist/ entries load).

import { parseArgs } from "node:util";
import { DaemonUnreachableError, HsError, InvalidArgumentError } from "../domain/errors.js";
import { HSD_VERSION } from "../daemon/version.js";
import type { CliIo, Command, CommandArgs } from "./command.js";
import { COMMANDS } from "./commands/index.js";
import type { Connection } from "./connect.js";
import { resolveSocket } from "./resolve-socket.js";
import { formatError, hintFor } from "../domain/hints.js";

const GLOBAL_HELP = () => `hsctl ${HSD_VERSION}: drive hsd, the homestak recursive nesting daemon

Usage: hsctl [--host ssh://USER@HOST[:PORT] [-i KEY] | --socket PATH | --root DIR] COMMAND [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(10)}${c.summary}`).join("\n")}

Which hsd: --host ssh://USER@HOST[:PORT] (or $HSD_HOST), a remote level
reached through its SSH endpoint, as with \`docker -H ssh://\`; else
--socket PATH, else --root DIR (a level directory, e.g. ./.hsd), else
$HSD_SOCKET, else $HSD_ROOT/run/hsd.sock (default ./.hsd) if it exists, else
the system daemon at /run/hsd/hsd.sock. Options may also follow the command.

Remote (--host): the host key must be in ~/.ssh/known_hosts (hsctl never
trusts an unknown key: it prints the fingerprint and how to add it); your
key comes from -i KEY, else ssh-agent ($SSH_AUTH_SOCK) and ~/.ssh/id_ed25519,
and must be a controller key on that level (there: hsctl access add --role
controller KEY.pub). The connect timeout is 10 s; a call's own is 60 s.

Any level: status, sync, destroy, doctor and logs take --level PATH, e.g.
--level l0/l1/l2, relayed down the tree: only the top needs to be reachable.

Examples:
  hsctl status
  hsctl --host ssh://root@pve1 status
  HSD_HOST=ssh://root@pve1:2222 hsctl logs --level l0/l1 -f
  hsctl --root ./.hsd status --json
  hsctl access add --role controller ~/.ssh/id_ed25519.pub

Run \`hsctl COMMAND --help\` for a command's options and examples.
`;

/**
 * The gRPC and SSH clients (grpc-js, protobuf, ssh2: about half of hsctl's
 * start-up) load on first use: `hsctl nest` with no hsd running starts level
 * 0 first and loads them while that daemon boots.
 */
let clients: Promise<typeof import("./connect.js")> | undefined;
const loadClients = () => (clients ??= import("./connect.js"));

const CONNECT_OPTIONS = {
  socket: { type: "string" },
  root: { type: "string" },
  host: { type: "string" },
  identity: { type: "string", short: "i" },
  help: { type: "boolean", short: "h" },
} as const;

class UsageError extends InvalidArgumentError {}

/** Splits global options (before the command) from the command and its args. */
type Globals = { socket?: string; root?: string; host?: string; identity?: string; help?: boolean };
const GLOBAL_VALUED = ["socket", "root", "host", "identity"] as const;

function splitGlobal(argv: string[]): { globals: Globals; cmd?: string; rest: string[] } {
  const globals: Globals = {};
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a === "-i" ? "identity" : a.startsWith("--") ? a.slice(2).split("=")[0] : undefined;
    if (a === "--help" || a === "-h") globals.help = true;
    else if (a === "--version") return { globals, cmd: "version", rest: [] };
    else if (name && (GLOBAL_VALUED as readonly string[]).includes(name)) {
      const v = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      globals[name as (typeof GLOBAL_VALUED)[number]] = v;
    } else if (a.startsWith("-")) throw new UsageError(`unknown option ${a}`);
    else break;
  }
  return { globals, cmd: argv[i], rest: argv.slice(i + 1) };
}

/** Waits for 'drain' when stdout's buffer is full; a closed or broken stdout releases the wait too. */
function stdoutReady(out: NodeJS.WriteStream): Promise<void> {
  if (!out.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { out.off("drain", done); out.off("close", done); out.off("error", done); resolve(); };
    out.once("drain", done); out.once("close", done); out.once("error", done);
  });
}

async function main(argv: string[]): Promise<number> {
  const ac = new AbortController();
  let interrupted = false;
  const onSignal = () => { interrupted = true; ac.abort(new HsError("interrupted")); };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const io: CliIo = {
    out: (t) => process.stdout.write(t),
    outReady: () => stdoutReady(process.stdout),
    err: (t) => process.stderr.write(t),
    env: process.env,
    cwd: process.cwd(),
    tty: Boolean(process.stdout.isTTY),
    signal: ac.signal,
  };

  const conns: Connection[] = [];
  let conn: Connection | undefined;
  let socketForErrors: string | undefined;
  try {
    const { globals, cmd, rest } = splitGlobal(argv);
    if (!cmd) {
      io.out(GLOBAL_HELP());
      return globals.help ? 0 : 2;
    }
    if (cmd === "help") {
      const target = rest[0] ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
      io.out(target ? target.help : GLOBAL_HELP());
      return 0;
    }
    const command: Command | undefined = COMMANDS.find((c) => c.name === cmd);
    if (!command) throw new UsageError(`unknown command ${JSON.stringify(cmd)} (one of: ${COMMANDS.map((c) => c.name).join(", ")})`);
    if (globals.help) { io.out(command.help); return 0; }

    let parsed;
    try {
      parsed = parseArgs({
        args: rest, strict: true, allowPositionals: command.allowPositionals ?? false,
        options: { ...CONNECT_OPTIONS, ...command.options },
      });
    } catch (err) {
      throw new UsageError(`${cmd}: ${(err as Error).message.split("\n")[0]}`);
    }
    if (parsed.values.help) { io.out(command.help); return 0; }
    const socket = (parsed.values.socket as string | undefined) ?? globals.socket;
    const root = (parsed.values.root as string | undefined) ?? globals.root;
    const copts = { env: io.env, cwd: io.cwd, ...(socket ? { socket } : {}), ...(root ? { root } : {}) };
    // --host (or HSD_HOST, unless a local socket or root was named) reaches a remote level.
    const host = (parsed.values.host as string | undefined) ?? globals.host ?? (socket || root ? undefined : io.env.HSD_HOST || undefined);
    const identity = (parsed.values.identity as string | undefined) ?? globals.identity;
    if (identity && !host) throw new UsageError("-i/--identity goes with --host (or HSD_HOST)");
    const args: CommandArgs = {
      values: parsed.values,
      positionals: parsed.positionals,
      async connect() {
        const { connect, connectHost } = await loadClients();
        if (host) {
          socketForErrors = host;
          if (!conn) { conn = await connectHost({ host, env: io.env, cwd: io.cwd, signal: io.signal, ...(identity ? { identity } : {}) }); conns.push(conn); }
          return conn;
        }
        socketForErrors ??= await resolveSocket(copts);
        if (!conn) { conn = await connect(copts); conns.push(conn); }
        return conn;
      },
      async connectTo(socket: string) {
        const { connectSocket } = await loadClients();
        socketForErrors = socket;
        const c = connectSocket(socket);
        conns.push(c);
        return c;
      },
      explicitTarget: Boolean(host || socket || root || io.env.HSD_SOCKET),
      localSocket: async () => (host ? undefined : resolveSocket(copts)),
      loadClients: async () => { await loadClients(); },
    };
    return await command.run(args, io);
  } catch (err) {
    if (interrupted) {
      io.err("hsctl: interrupted\n");
      return 130;
    }
    if (err instanceof DaemonUnreachableError) {
      // The one thing a new user hits first: say where we looked and how to start one.
      io.err(`hsctl: no hsd at ${socketForErrors ?? "the resolved socket"}\n  hint: ${hintFor(err.code)}\n`);
      return 1;
    }
    if (err instanceof UsageError) {
      io.err(`hsctl: ${err.message}\nRun \`hsctl --help\` for usage.\n`);
      return 2;
    }
    if (err instanceof HsError) {
      // A hint the error brings (a daemon's own, a PVE step's) is more precise than the table's.
      const hint = typeof err.details.hint === "string" ? err.details.hint : undefined;
      io.err(`${formatError("hsctl", err.code, err.message, hint ?? hintFor(err.code))}\n`);
      return 1;
    }
    io.err(`hsctl: unexpected failure: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    return 1;
  } finally {
    await Promise.all(conns.map(async (c) => { try { await c.close(); } catch { /* exiting anyway */ } }));
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

main(process.argv.slice(2)).then(async (code) => {
  // The build's run that writes the code cache (scripts/bundle-entries.mjs)
  // loads the clients too, so a later start finds them compiled.
  if (process.env.HSD_WRITE_CODE_CACHE === "1") await loadClients();
  process.exitCode = code;
});
