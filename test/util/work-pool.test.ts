// WorkPool: at most `size` jobs at once, started in queue order, and a freed
// slot takes the next job whichever slot it was (no fixed lanes).
import { test } from "node:test";
import assert from "node:assert/strict";
import { WorkPool } from "../../src/util/work-pool.js";

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

test("a long first job does not hold back the jobs queued behind the other slot's", async () => {
  const pool = new WorkPool(2);
  const started: string[] = [];
  const gates = new Map(["long", "a", "b", "c", "d"].map((n) => [n, deferred()]));
  const runs = [...gates.keys()].map((n) => pool.run(async () => { started.push(n); await gates.get(n)!.promise; return n; }));
  await tick();
  assert.deepEqual(started, ["long", "a"]);
  // With fixed lanes (i % 2), "b" would wait for "long"; here it takes the slot "a" freed.
  gates.get("a")!.resolve();
  await tick();
  assert.deepEqual(started, ["long", "a", "b"]);
  gates.get("b")!.resolve();
  await tick();
  gates.get("c")!.resolve();
  await tick();
  assert.deepEqual(started, ["long", "a", "b", "c", "d"]);
  gates.get("d")!.resolve();
  gates.get("long")!.resolve();
  assert.deepEqual(await Promise.all(runs), ["long", "a", "b", "c", "d"]);
});

test("never more than `size` at once, and a failed job frees its slot", async () => {
  const pool = new WorkPool(2);
  let now = 0;
  let peak = 0;
  const job = (fail: boolean) => async () => {
    now++; peak = Math.max(peak, now);
    await tick();
    now--;
    if (fail) throw new Error("generation failed");
    return "ok";
  };
  const results = await Promise.allSettled([true, false, true, false, false, false].map((f) => pool.run(job(f))));
  assert.equal(peak, 2);
  assert.deepEqual(results.map((r) => r.status), ["rejected", "fulfilled", "rejected", "fulfilled", "fulfilled", "fulfilled"]);
  assert.equal(await pool.run(async () => "after"), "after");
});

test("a pool without a slot is refused", () => {
  assert.throws(() => new WorkPool(0), RangeError);
});
