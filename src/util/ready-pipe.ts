// Waits for a freshly spawned hsd to say it is ready, event-driven: the child
// writes one JSON line to the inherited pipe (HSD_READY_FD) once its gRPC
// socket and SSH endpoint serve, or `{"error": StartFailure}` when it cannot
// start. No polling, no sleeps.
// Imported by: anyone.

import type { ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { Readable } from "node:stream";
import { ProviderError } from "../domain/errors.js";

export interface ReadyInfo {
  pid: number;
  socket: string;
  sshHost: string;
  sshPort: number;
  hostKeyFingerprint: string;
  publicKey: string;
  version: string;
}

/** After the child exits, how long its ready pipe may take to deliver its last line. */
const PIPE_DRAIN_MS = 1000;

/** What a daemon that cannot start says about it: its own error code, message and hint. */
export interface StartFailure {
  code: string;
  message: string;
  hint?: string;
  details?: Record<string, unknown>;
}

/**
 * Resolves with the ready line; rejects if the child reports a failure, exits
 * first or the signal aborts. A ProviderError whose details.failure is the
 * child's StartFailure when it sent one.
 */
export function readyFromPipe(proc: ChildProcess, signal: AbortSignal, logTail: () => Promise<string>): Promise<ReadyInfo> {
  const pipe = proc.stdio[3] as Readable | null;
  return new Promise<ReadyInfo>((resolve, reject) => {
    if (!pipe) return reject(new ProviderError("child has no readiness pipe"));
    let buf = "";
    let settled = false;
    let drainTimer: NodeJS.Timeout | undefined;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener("abort", onAbort);
      proc.off("exit", onExit);
      clearTimeout(drainTimer);
      pipe.destroy();
      fn();
    };
    const onAbort = () => finish(() => reject(signal.reason));
    const exitedBeforeReady = (code: number | null, sig: string | null) => {
      void logTail().then((t) => finish(() => reject(new ProviderError(
        `child hsd exited before it was ready (${sig ?? `exit ${code}`})${t ? `: ${summarize(t)}` : ""}`,
        { details: { exitCode: code, signal: sig } },
      ))));
    };
    // "exit" can come before the pipe's last bytes are read: a failure line
    // must not be lost, so the pipe is drained first. Bounded, because a
    // process the child started may still hold the pipe's write end.
    const onExit = (code: number | null, sig: string | null) => {
      if (pipe.readableEnded || pipe.destroyed) return exitedBeforeReady(code, sig);
      const drained = () => exitedBeforeReady(code, sig);
      pipe.once("close", drained);
      drainTimer = setTimeout(drained, PIPE_DRAIN_MS);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    proc.once("exit", onExit);
    pipe.setEncoding("utf8");
    pipe.on("data", (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      let line: ReadyInfo & { error?: StartFailure };
      try {
        line = JSON.parse(buf.slice(0, nl)) as ReadyInfo & { error?: StartFailure };
      } catch (err) {
        return finish(() => reject(new ProviderError("child sent a malformed ready line", { cause: err })));
      }
      if (line.error === undefined) return finish(() => resolve(line));
      const failure = startFailure(line.error) ?? { code: "Internal", message: "child sent a malformed failure line" };
      finish(() => reject(new ProviderError(`child hsd could not start: ${failure.message} [${failure.code}]`, {
        details: { failure },
      })));
    });
    pipe.on("error", () => { /* exit handler reports */ });
  });
}

/** The failure a child sent, checked field by field: it crossed a process boundary. */
function startFailure(v: unknown): StartFailure | undefined {
  const f = v as Partial<StartFailure> | null;
  if (!f || typeof f !== "object" || typeof f.code !== "string" || typeof f.message !== "string") return undefined;
  return {
    code: f.code, message: f.message,
    ...(typeof f.hint === "string" ? { hint: f.hint } : {}),
    ...(f.details && typeof f.details === "object" ? { details: f.details } : {}),
  };
}

/** The `msg`/`err` of the child's last JSON log lines: what went wrong, in its words. */
function summarize(tail: string): string {
  const out: string[] = [];
  for (const line of tail.split("\n")) {
    try {
      const j = JSON.parse(line) as { msg?: string; err?: { message?: string }; code?: string };
      if (j.msg) out.push([j.msg, j.code, j.err?.message].filter(Boolean).join(": "));
    } catch {
      out.push(line.slice(0, 200));
    }
  }
  return out.slice(-2).join(" | ");
}

/** The last `lines` lines of a child's log file ("" when there is none), for readyFromPipe's logTail. */
export async function readLogTail(path: string, lines = 5): Promise<string> {
  const text = await readFile(path, "utf8").catch(() => "");
  return text.split("\n").filter(Boolean).slice(-lines).join("\n");
}
