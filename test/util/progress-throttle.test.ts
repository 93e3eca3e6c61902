import { test } from "node:test";
import assert from "node:assert/strict";
import { progressThrottle } from "../../src/util/progress-throttle.js";

interface P { repo: string; done: number; total: number }

function harness() {
  let now = 0;
  const out: P[] = [];
  const t = progressThrottle<P>({
    intervalMs: 100, now: () => now, key: (p) => p.repo, isFinal: (p) => p.total > 0 && p.done >= p.total, emit: (p) => out.push(p),
  });
  return { t, out, advance: (ms: number) => { now += ms; } };
}

test("a burst of reports sends the first, then at most one per interval, and always the final", () => {
  const { t, out, advance } = harness();
  for (let i = 1; i <= 1000; i++) { t({ repo: "a", done: i, total: 1000 }); advance(0.5); }
  // 500 ms of reports at 100 ms: the first, four or five by interval, and the final.
  assert.ok(out.length <= 7, `sent ${out.length}`);
  assert.deepEqual(out[0], { repo: "a", done: 1, total: 1000 });
  assert.deepEqual(out.at(-1), { repo: "a", done: 1000, total: 1000 });
});

test("keys are throttled independently, and a repeated final is dropped", () => {
  const { t, out } = harness();
  t({ repo: "a", done: 1, total: 2 });
  t({ repo: "b", done: 1, total: 2 });
  t({ repo: "a", done: 2, total: 2 });
  t({ repo: "a", done: 2, total: 2 });
  assert.deepEqual(out.map((p) => `${p.repo}${p.done}`), ["a1", "b1", "a2"]);
});

test("flush sends each key's held-back latest report once", () => {
  const { t, out } = harness();
  t({ repo: "a", done: 1, total: 0 });
  t({ repo: "a", done: 2, total: 0 });
  t({ repo: "a", done: 3, total: 0 });
  t({ repo: "b", done: 1, total: 0 });
  t.flush();
  t.flush();
  assert.deepEqual(out.map((p) => `${p.repo}${p.done}`), ["a1", "b1", "a3"]);
});
