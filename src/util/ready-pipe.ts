// Waits for a freshly spawned hsd to say it is ready, event-driven: the child
// writes one JSON line to the inherited pipe (HSD_READY_FD) once its gRPC
// socket and SSH endpoint serve. No polling, no sleeps.
// Imported by: anyone.

import type { ChildProcess } from "node:child_process";
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

/** Resolves with the ready line; rejects if the child exits first or the signal aborts. */
export function readyFromPipe(proc: ChildProcess, signal: AbortSignal, logTail: () => Promise<string>): Promise<ReadyInfo> {
  const pipe = proc.stdio[3] as Readable | null;
  return new Promise<ReadyInfo>((resolve, reject) => {
    if (!pipe) return reject(new ProviderError("child has no readiness pipe"));
    let buf = "";
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener("abort", onAbort);
      proc.off("exit", onExit);
      pipe.destroy();
      fn();
    };
    const onAbort = () => finish(() => reject(signal.reason));
    const onExit = (code: number | null, sig: string | null) => {
      void logTail().then((t) => finish(() => reject(new ProviderError(
        `child hsd exited before it was ready (${sig ?? `exit ${code}`})${t ? `: ${summarize(t)}` : ""}`,
        { details: { exitCode: code, signal: sig } },
      ))));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    proc.once("exit", onExit);
    pipe.setEncoding("utf8");
    pipe.on("data", (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      try {
        const info = JSON.parse(buf.slice(0, nl)) as ReadyInfo;
        finish(() => resolve(info));
      } catch (err) {
        finish(() => reject(new ProviderError("child sent a malformed ready line", { cause: err })));
      }
    });
    pipe.on("error", () => { /* exit handler reports */ });
  });
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
