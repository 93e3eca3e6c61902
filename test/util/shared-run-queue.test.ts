// SharedRunQueue: a waiting run is shared, a running one is followed by a new
// run, keys are independent, and a failed wait fails only the run it gated.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SharedRunQueue } from "../../src/util/shared-run-queue.js";

function gate(): { wait: () => Promise<void>; open: () => void; fail: (e: Error) => void } {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const p = new Promise<void>((res, rej) => { open = res; fail = rej; });
  p.catch(() => {});
  return { wait: () => p, open, fail };
}

test("callers that arrive while a run waits share it: the job runs once", async () => {
  const q = new SharedRunQueue<number>();
  const g = gate();
  let runs = 0;
  const job = async () => ++runs;
  const a = q.run("x", g.wait, job);
  const b = q.run("x", g.wait, job);
  assert.equal(a, b);
  g.open();
  assert.deepEqual(await Promise.all([a, b]), [1, 1]);
  assert.equal(runs, 1);
});

test("a caller arriving while the job runs gets a run of its own, after that one", async () => {
  const q = new SharedRunQueue<string>();
  const order: string[] = [];
  const inJob = gate();
  const release = gate();
  const first = q.run("x", async () => {}, async () => { order.push("first start"); inJob.open(); await release.wait(); order.push("first end"); return "first"; });
  await inJob.wait();
  const second = q.run("x", async () => {}, async () => { order.push("second start"); return "second"; });
  const third = q.run("x", async () => {}, async () => "third (never runs: it joined second)");
  assert.equal(second, third);
  release.open();
  assert.deepEqual(await Promise.all([first, second, third]), ["first", "second", "second"]);
  assert.deepEqual(order, ["first start", "first end", "second start"]);
});

test("keys do not wait for each other", async () => {
  const q = new SharedRunQueue<string>();
  const held = gate();
  const a = q.run("a", held.wait, async () => "a");
  assert.equal(await q.run("b", async () => {}, async () => "b"), "b");
  held.open();
  assert.equal(await a, "a");
});

test("a failed wait rejects the run and its joiners; the next caller gets a fresh run", async () => {
  const q = new SharedRunQueue<string>();
  const g = gate();
  let runs = 0;
  const a = q.run("x", g.wait, async () => { runs++; return "never"; });
  const b = q.run("x", g.wait, async () => { runs++; return "never"; });
  g.fail(new Error("checkout not generated"));
  await assert.rejects(a, /checkout not generated/);
  await assert.rejects(b, /checkout not generated/);
  assert.equal(await q.run("x", async () => {}, async () => { runs++; return "fresh"; }), "fresh");
  assert.equal(runs, 1);
});

test("a job that fails does not stop the next run", async () => {
  const q = new SharedRunQueue<string>();
  await assert.rejects(q.run("x", async () => {}, async () => { throw new Error("boom"); }), /boom/);
  assert.equal(await q.run("x", async () => {}, async () => "ok"), "ok");
});
