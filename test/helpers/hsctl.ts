// Test helpers that run the real hsctl binary as a process and collect what
// a user would see. Shared by the end-to-end tests.
import { spawn } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { withFaultPreload } from "./fault-env.js";

export const REPO = fileURLToPath(new URL("../..", import.meta.url));
export const HSCTL = join(REPO, "dist/cli/hsctl.js");
export const HSD = join(REPO, "dist/daemon/hsd.js");

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** Runs hsctl with `args`; resolves when it exits or after timeoutMs (then killed, code null). */
export function hsctl(args: string[], env: Record<string, string>, timeoutMs = 120_000, onLine?: (line: string, kill: () => void) => void): Promise<RunResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [HSCTL, ...args], { env: withFaultPreload({ ...process.env, ...env }), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let buf = "";
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
      if (!onLine) return;
      buf += c;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) { const line = buf.slice(0, nl); buf = buf.slice(nl + 1); onLine(line, () => p.kill("SIGINT")); }
    });
    p.stderr.setEncoding("utf8").on("data", (c: string) => { stderr += c; });
    p.on("close", (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

export function jsonLines(s: string): Record<string, any>[] {
  return s.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** Every level root under a level-0 root, depth first: [l0, l1, l2, ...]. */
export async function levelRoots(root: string): Promise<string[]> {
  const out = [root];
  const levels = join(root, "state", "levels");
  const names = await readdir(levels).catch(() => [] as string[]);
  for (const n of names.sort()) out.push(...(await levelRoots(join(levels, n))));
  return out;
}

/** hsd processes whose command line mentions `dir` (any level under it). */
export async function hsdProcessesUnder(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const p of await readdir("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, "utf8").catch(() => "");
    if (cmd.includes("hsd.js") && cmd.includes(dir)) pids.push(Number(p));
  }
  return pids;
}

export async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

/**
 * A temp root for one e2e test file with HSD_ROOT at <root>/l0, torn down
 * after the file even on failure: hsctl destroy, then SIGKILL of any hsd
 * left under the root, then the directory.
 */
export async function e2eTree(prefix: string, extraEnv: Record<string, string> = {}): Promise<{ root: string; l0: string; env: Record<string, string> }> {
  const { mkdtemp, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { after } = await import("node:test");
  const root = await mkdtemp(join(tmpdir(), prefix));
  const l0 = join(root, "l0");
  const env = { HSD_ROOT: l0, ...extraEnv };
  after(async () => {
    await hsctl(["destroy", "--json"], env, 60_000).catch(() => undefined);
    for (const pid of await hsdProcessesUnder(root)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
    await rm(root, { recursive: true, force: true });
  });
  return { root, l0, env };
}
