// The one seam through which the pve provider runs host commands (pvesm, pveum,
// pvecm, qm, systemctl, sysctl, ip). Production uses execCommandRunner; tests
// substitute simulator-backed shims. Imported by the pve provider and preflight.

import { spawn } from "node:child_process";
import { CommandTimeoutError } from "../../errors/hs-error.js";

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CommandRunner {
  /** Runs cmd with args (no shell). Never rejects for a non-zero exit; rejects on timeout/abort. */
  run(cmd: string, args: readonly string[], opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<CommandResult>;
}

export function execCommandRunner(defaultTimeoutMs = 60_000): CommandRunner {
  return {
    run(cmd, args, opts = {}) {
      const timeoutMs = opts.timeoutMs ?? defaultTimeoutMs;
      return new Promise((resolve, reject) => {
        const child = spawn(cmd, [...args], { stdio: ["ignore", "pipe", "pipe"], signal: opts.signal });
        let stdout = "";
        let stderr = "";
        child.stdout.setEncoding("utf8").on("data", (d: string) => { stdout += d; });
        child.stderr.setEncoding("utf8").on("data", (d: string) => { stderr += d; });
        const timer = setTimeout(() => {
          child.kill("SIGKILL");
          reject(new CommandTimeoutError(`${cmd} did not finish within ${timeoutMs} ms`, { details: { cmd } }));
        }, timeoutMs);
        child.on("error", (e: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          if (e.code === "ENOENT") resolve({ code: 127, stdout, stderr: `${cmd}: command not found` });
          else reject(e);
        });
        child.on("close", (code) => { clearTimeout(timer); resolve({ code: code ?? 1, stdout, stderr }); });
      });
    },
  };
}
