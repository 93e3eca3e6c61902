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
import { connect, connectSocket, resolveSocket, type Connection } from "./connect.js";
import { formatError, hintFor } from "../domain/hints.js";

const GLOBAL_HELP = () => `hsctl ${HSD_VERSION}: drive hsd, the homestak recursive nesting daemon

Usage: hsctl [--socket PATH | --root DIR] COMMAND [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(10)}${c.summary}`).join("\n")}

Which hsd: --socket PATH, else --root DIR (a level directory, e.g. ./.hsd),
else $HSD_SOCKET, else $HSD_ROOT/run/hsd.sock (default ./.hsd) if it exists,
else the system daemon at /run/hsd/hsd.sock. Options may also follow the command.

Examples:
  hsctl status
  hsctl --root ./.hsd status --json
  hsctl access add --role controller ~/.ssh/id_ed25519.pub

Run \`hsctl COMMAND --help\` for a command's options and examples.
`;

const CONNECT_OPTIONS = {
  socket: { type: "string" },
  root: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

class UsageError extends InvalidArgumentError {}

/** Splits global options (before the command) from the command and its args. */
function splitGlobal(argv: string[]): { globals: { socket?: string; root?: string; help?: boolean }; cmd?: string; rest: string[] } {
  const globals: { socket?: string; root?: string; help?: boolean } = {};
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--help" || a === "-h") globals.help = true;
    else if (a === "--version") return { globals, cmd: "version", rest: [] };
    else if (a === "--socket" || a === "--root") {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      globals[a.slice(2) as "socket" | "root"] = v;
    } else if (a.startsWith("--socket=") || a.startsWith("--root=")) {
      const [k, v] = [a.slice(2, a.indexOf("=")), a.slice(a.indexOf("=") + 1)];
      globals[k as "socket" | "root"] = v;
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
    const args: CommandArgs = {
      values: parsed.values,
      positionals: parsed.positionals,
      async connect() {
        socketForErrors ??= await resolveSocket(copts);
        if (!conn) { conn = await connect(copts); conns.push(conn); }
        return conn;
      },
      async connectTo(socket: string) {
        socketForErrors = socket;
        const c = connectSocket(socket);
        conns.push(c);
        return c;
      },
      explicitTarget: Boolean(socket || root || io.env.HSD_SOCKET),
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
    for (const c of conns) c.close();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
