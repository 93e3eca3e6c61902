// Test helper: spawns the real built hsd (dist/daemon/hsd.js) and hsctl as
// processes, waits for readiness on the HSD_READY_FD pipe, and always cleans
// up. Imported by test/daemon tests and bench/daemon-start.ts.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { withFaultPreload } from "../helpers/fault-env.js";

export const REPO = fileURLToPath(new URL("../..", import.meta.url));
export const HSD = join(REPO, "dist/daemon/hsd.js");
export const HSCTL = join(REPO, "dist/cli/hsctl.js");
export const WAIT_MS = 20_000;

export interface ReadyLine {
  pid: number; socket: string; sshHost: string; sshPort: number; hostKeyFingerprint: string; publicKey: string; version: string;
}

export interface Exited { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

export interface HsdProcess {
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /**
   * Resolves with the ready line, or rejects if hsd exits first or WAIT_MS passes;
   * the rejection's `failure` is the error hsd wrote to its ready pipe, if it did.
   */
  ready: Promise<ReadyLine>;
  exited: Promise<Exited>;
  /** SIGKILL if still running; safe to call twice. */
  kill(): Promise<void>;
}

/** Tests never take the real port 2222: a root without hsd.yaml gets a loopback, any-port one. */
function defaultTestConfig(args: string[]): void {
  const i = args.indexOf("--root");
  if (i < 0 || args.includes("--config")) return;
  const root = args[i + 1]!;
  mkdirSync(root, { recursive: true });
  const file = join(root, "hsd.yaml");
  if (!existsSync(file)) writeFileSync(file, "ssh:\n  host: 127.0.0.1\n  port: 0\n");
}

export function startHsd(args: string[], env: NodeJS.ProcessEnv = {}): HsdProcess {
  defaultTestConfig(args);
  // Started as hsd is started for real (a parent, hsctl, the service): its entry sets its V8 flags.
  const proc = spawn(process.execPath, [HSD, ...args], {
    stdio: ["ignore", "pipe", "pipe", "pipe"],
    env: withFaultPreload({ ...process.env, HSD_READY_FD: "3", ...env }),
  });
  let out = "";
  let err = "";
  proc.stdout!.setEncoding("utf8").on("data", (c: string) => { out += c; });
  proc.stderr!.setEncoding("utf8").on("data", (c: string) => { err += c; });
  const exited = new Promise<Exited>((resolve) => {
    proc.on("close", (code, signal) => resolve({ code, signal, stdout: out, stderr: err }));
  });
  const ready = new Promise<ReadyLine>((resolve, reject) => {
    const pipe = proc.stdio[3] as Readable;
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`hsd not ready after ${WAIT_MS} ms: ${err}`)), WAIT_MS);
    pipe.setEncoding("utf8").on("data", (c: string) => {
      buf += c;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      const line = JSON.parse(buf.slice(0, nl)) as ReadyLine & { error?: unknown };
      if (line.error === undefined) return resolve(line);
      reject(Object.assign(new Error(`hsd could not start: ${JSON.stringify(line.error)}`), { failure: line.error }));
    });
    pipe.on("error", () => {});
    void exited.then((x) => { clearTimeout(timer); reject(new Error(`hsd exited (${x.code ?? x.signal}) before ready: ${x.stderr}`)); });
  });
  ready.catch(() => {}); // observed by the test that awaits it
  return {
    proc, ready, exited,
    stdout: () => out,
    stderr: () => err,
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      await exited;
    },
  };
}

/** Runs a program to completion (killed after WAIT_MS). */
export function runProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd = REPO): Promise<Exited> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => p.kill("SIGKILL"), WAIT_MS);
    p.stdout.setEncoding("utf8").on("data", (c: string) => { stdout += c; });
    p.stderr.setEncoding("utf8").on("data", (c: string) => { stderr += c; });
    p.on("close", (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
  });
}

export const runHsctl = (args: string[], env: NodeJS.ProcessEnv = {}, cwd = REPO) =>
  runProcess(process.execPath, [HSCTL, ...args], { HSD_SOCKET: "", ...env }, cwd);
