// The install phase's wait for cloud-init on a fresh VM (seed lesson 7): report the
// state it finds, wait within the budget (bounded on the VM too, so nothing lingers
// there), and fail typed when cloud-init ended in `error` or is still running when
// the budget is spent. A VM without cloud-init is not waited for.
// Imported by: src/providers/pve.

import { CloudInitError } from "../../domain/errors.js";
import type { CommandResult } from "../../util/command-runner.js";

type Run = (cmd: string, timeoutMs?: number) => Promise<CommandResult>;

/** `status: <state>` of `cloud-init status` (running, done, error, degraded done, disabled, not run). */
export function cloudInitState(stdout: string): string {
  return /^status:\s*(.+?)\s*$/m.exec(stdout)?.[1] ?? "unknown";
}

/** The first `detail:` line of `cloud-init status --long`, or its last line (what failed). */
function cloudInitDetail(long: string): string {
  const lines = long.split("\n").map((l) => l.trim()).filter(Boolean);
  const at = lines.findIndex((l) => l.startsWith("detail:"));
  return (at >= 0 ? (lines[at].slice("detail:".length).trim() || lines[at + 1]) : lines.at(-1)) ?? "";
}

export async function waitForCloudInit(run: Run, o: { cloudInitTimeoutMs?: number; log: (m: string) => void }, cmdMs: number): Promise<void> {
  const first = await run("cloud-init status", cmdMs);
  if (first.code === 127) { o.log("cloud-init not installed; not waiting for it"); return; }
  const budgetMs = o.cloudInitTimeoutMs ?? 600_000;
  const state0 = cloudInitState(first.stdout);
  // Finished without errors: `--wait` would only say so again, one more SSH round trip.
  if (state0 === "done" && first.code === 0) { o.log("cloud-init is done"); return; }
  o.log(`cloud-init is ${state0}${state0 === "running" || state0 === "not run" ? `; waiting for it (at most ${Math.ceil(budgetMs / 1000)} s)` : ""}`);
  const t0 = Date.now();
  // From outside cloud-init only: inside its own runcmd this would wait for itself.
  // `timeout` ends the wait on the VM; the exec bound (a command bound more) is the backstop.
  const ci = await run(`timeout ${Math.max(1, Math.ceil(budgetMs / 1000))} cloud-init status --wait`, budgetMs + cmdMs);
  if (ci.code === 0 || ci.code === 2) {
    o.log(`cloud-init finished${ci.code === 2 ? " with recoverable errors" : ""}`);
    return;
  }
  const long = await run("cloud-init status --long", cmdMs);
  const state = cloudInitState(long.stdout);
  const waitedMs = Date.now() - t0;
  if (ci.code === 124) {
    throw new CloudInitError(`cloud-init on the child is still ${state} after ${budgetMs} ms`, {
      details: { step: "cloud-init", state, waitedMs },
    });
  }
  throw new CloudInitError(`cloud-init on the child ended in ${state}: ${cloudInitDetail(long.stdout)}`, {
    details: { step: "cloud-init", state, waitedMs, exitCode: ci.code },
  });
}
