// Running external commands: argv only (never a shell), always bounded by a
// timeout, cancellable by an AbortSignal. Providers take a CommandRunner
// injected so tests can substitute or prefix it (e.g. run the same steps inside
// another network namespace).
// Imported by: anyone.

import { spawn } from "node:child_process";
import { constants } from "node:os";
import { CancelledError, CommandFailedError, CommandTimeoutError, HsError } from "../domain/errors.js";

export interface CommandOptions {
  /** Kill the command and reject with CommandTimeoutError after this long. Default 60 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Reject with CommandFailedError on a non-zero exit instead of resolving. */
  check?: boolean;
  /** Written to stdin, which is then closed. Without it stdin is /dev/null. */
  input?: string | Uint8Array;
  /**
   * Secret-free description for errors and logs (e.g. "ip link add"). Errors
   * otherwise name only argv[0]: arguments may carry values callers must not leak.
   */
  label?: string;
  /** Extra environment, merged over process.env. */
  env?: Record<string, string>;
  cwd?: string;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export type CommandRunner = (argv: readonly string[], opts?: CommandOptions) => Promise<CommandResult>;

export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;
/** Output beyond this is dropped (the tail is lost, the process still runs to completion). */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

/** First non-empty line of a command's stderr, trimmed and bounded, for error messages. */
export function firstLine(text: string, max = 300): string {
  const line = text.split("\n").map((l) => l.trim()).find((l) => l.length > 0) ?? "";
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

/** Throws CommandFailedError unless the result is a zero exit. For runners whose callers did not pass `check`. */
export function assertSuccess(argv: readonly string[], res: CommandResult, label?: string): CommandResult {
  if (res.code === 0) return res;
  const what = label ?? argv[0] ?? "command";
  const line = firstLine(res.stderr);
  throw new CommandFailedError(`${what} exited ${res.code}${line ? `: ${line}` : ""}`, {
    details: { command: what, exitCode: res.code, stderr: line },
  });
}

/** The real runner: spawn(argv[0], argv[1..]) with pipes, no shell. */
export const runCommand: CommandRunner = (argv, opts = {}) => {
  const what = opts.label ?? argv[0] ?? "command";
  const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  return new Promise<CommandResult>((resolve, reject) => {
    if (argv.length === 0) {
      reject(new CommandFailedError("empty argv", { details: { command: what } }));
      return;
    }
    if (opts.signal?.aborted) {
      reject(abortReason(opts.signal, what));
      return;
    }
    let settled = false;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      cwd: opts.cwd,
      windowsHide: true,
    });
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      fn();
    };
    // On timeout or abort we reject at once rather than waiting for "close":
    // a grandchild that inherited the pipes could otherwise hold them open forever.
    // Our ends of the pipes are destroyed too, so such a grandchild cannot keep
    // this process's event loop alive either (it is not killed: it is not ours
    // to know about; commands that fork long-lived helpers must manage them).
    const kill = () => {
      try { child.kill("SIGKILL"); } catch { /* already gone */ }
      child.stdout?.destroy();
      child.stderr?.destroy();
      child.stdin?.destroy();
    };
    const timer = setTimeout(() => {
      kill();
      finish(() => reject(new CommandTimeoutError(`${what} did not finish within ${timeoutMs} ms`, {
        details: { command: what, timeoutMs },
      })));
    }, timeoutMs);
    const onAbort = () => {
      kill();
      finish(() => reject(abortReason(opts.signal!, what)));
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });

    child.stdout!.on("data", (b: Buffer) => {
      if (outBytes < MAX_OUTPUT_BYTES) { out.push(b); outBytes += b.length; }
    });
    child.stderr!.on("data", (b: Buffer) => {
      if (errBytes < MAX_OUTPUT_BYTES) { err.push(b); errBytes += b.length; }
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      // Spawn failures (ENOENT, EACCES) have no exit code to "check", so they
      // always reject: a missing binary is never a silent success.
      finish(() => reject(new CommandFailedError(`${what} could not be started: ${e.code ?? e.message}`, {
        details: { command: what, errno: e.code }, cause: e,
      })));
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on("error", () => { /* EPIPE when the command ignores stdin */ });
      child.stdin.end(opts.input);
    }
    child.on("close", (code, sig) => {
      const res: CommandResult = {
        // A signal death is reported the shell way (128 + n) so callers see a non-zero code.
        code: code ?? (sig ? 128 + (constants.signals[sig] ?? 0) : 1),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      };
      finish(() => {
        if (opts.check && res.code !== 0) {
          try { assertSuccess(argv, res, opts.label); } catch (e) { reject(e); return; }
        }
        resolve(res);
      });
    });
  });
};

function abortReason(signal: AbortSignal, what: string): Error {
  const r: unknown = signal.reason;
  if (r instanceof HsError) return r;
  return new CancelledError(`${what} was cancelled`, { details: { command: what }, cause: r });
}

/**
 * A runner that puts `prefix` before every argv, e.g. to run inside a network
 * namespace. Errors still name the inner command (not the prefix's binary)
 * unless the caller gave its own label.
 */
export function prefixedRunner(run: CommandRunner, prefix: readonly string[]): CommandRunner {
  return (argv, opts) => run([...prefix, ...argv], { ...opts, label: opts?.label ?? argv[0] });
}

/**
 * A runner that answers exit 127 (the shell's "command not found") when argv[0]
 * cannot be found, instead of rejecting; every other outcome is unchanged and
 * `check` still rejects. For probes where a missing tool is an answer, not a
 * crash (e.g. pve preflight asking for pvecm on a host without PVE).
 */
export function missingAs127(run: CommandRunner): CommandRunner {
  return async (argv, opts) => {
    try {
      return await run(argv, opts);
    } catch (e) {
      if (!opts?.check && e instanceof CommandFailedError && e.details.errno === "ENOENT") {
        return { code: 127, stdout: "", stderr: `${opts?.label ?? argv[0] ?? "command"}: command not found\n` };
      }
      throw e;
    }
  };
}
