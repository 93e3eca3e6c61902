// The shape of an hsctl subcommand and the I/O it gets. One file per command in
// src/cli/commands/, registered by one line in commands/index.ts.
// Imported by: src/cli.

import type { ParseArgsConfig } from "node:util";
import type { Connection } from "./connect.js";

export interface CliIo {
  out(text: string): void;
  /** Resolves once stdout has room again (a slow reader of a piped hsctl holds the stream back instead of growing a buffer). */
  outReady?(): Promise<void>;
  err(text: string): void;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** True when stdout is a terminal (live views); false when piped. */
  readonly tty: boolean;
  /** Aborted on SIGINT/SIGTERM: long streams stop and the daemon-side call is cancelled. */
  readonly signal: AbortSignal;
}

export interface CommandArgs {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
  /** Opens (once) the connection chosen by --socket/--root/HSD_SOCKET/defaults. */
  connect(): Promise<Connection>;
  /** Opens a connection to this socket instead (e.g. a level 0 hsctl just started); closed at exit like the other. */
  connectTo(socket: string): Promise<Connection>;
  /** True when --socket, --root or HSD_SOCKET named the daemon (hsctl must not start one of its own). */
  readonly explicitTarget: boolean;
  /**
   * The local socket connect() would dial, found without loading the gRPC
   * and SSH clients; undefined when the target is remote (--host).
   */
  localSocket(): Promise<string | undefined>;
  /** Loads the gRPC and SSH client code now (hsctl loads it when a command first connects): while a daemon it started boots. */
  loadClients(): Promise<void>;
}

export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** Full help: usage, what it does, examples. */
  readonly help: string;
  readonly options: NonNullable<ParseArgsConfig["options"]>;
  readonly allowPositionals?: boolean;
  /** Returns the exit code. Throw HsErrors for failures; hsctl prints them. */
  run(args: CommandArgs, io: CliIo): Promise<number>;
}
