// The preflight phase runs the level's own checks (its images: a first hash can take a while)
// beside the provider's, and reports both, the level's own first; a failure in either fails it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { preflightPhase } from "../../src/nest/phases/preflight.js";
import type { PhaseRun } from "../../src/nest/phase-hook.js";
import type { CheckResult } from "../../src/domain/checks.js";
import { silentLogger } from "../../src/log/logger.js";

function run(levelChecks: () => Promise<CheckResult[]>, preflight: () => Promise<CheckResult[]>, logs: string[]): PhaseRun {
  return {
    levelChecks, provider: { preflight } as unknown as PhaseRun["provider"], signal: new AbortController().signal, log: silentLogger(),
    emit: (ev: { message?: string }) => { logs.push(ev.message ?? ""); },
  } as unknown as PhaseRun;
}

test("the provider's checks start while the level's own are still running; both are reported, the level's first", async () => {
  const order: string[] = [];
  let release!: () => void;
  const own = new Promise<void>((r) => { release = r; });
  const logs: string[] = [];
  const done = preflightPhase.run(run(
    async () => {
      order.push("own start");
      // Waits for the provider's start (bounded: run one after the other, they would never meet).
      await Promise.race([own, new Promise((r) => setTimeout(r, 1000))]);
      order.push("own end");
      return [{ name: "image a", result: "ok", detail: "" }];
    },
    async () => { order.push("provider start"); release(); return [{ name: "api", result: "ok", detail: "" }]; },
    logs,
  ));
  await done;
  assert.deepEqual(order, ["own start", "provider start", "own end"]);
  assert.deepEqual(logs, ["image a: ok", "api: ok"]);
});

test("a failed check on either side fails the phase, after both ran", async () => {
  let providerRan = false;
  await assert.rejects(preflightPhase.run(run(
    async () => [{ name: "image a", result: "failed", detail: "missing", hint: "h" }],
    async () => { providerRan = true; return [{ name: "api", result: "ok", detail: "" }]; },
    [],
  )), (e: { code?: string }) => e.code === "PreflightFailed");
  assert.ok(providerRan);
});
