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

function deferredHarness() {
  let now = 0;
  const out: P[] = [];
  const timers: { at: number; fn: () => void; live: boolean }[] = [];
  const t = progressThrottle<P>({
    intervalMs: 100, now: () => now, key: (p) => p.repo, isFinal: (p) => p.total > 0 && p.done >= p.total, emit: (p) => out.push(p),
    leading: false,
    schedule: (fn, ms) => { const e = { at: now + ms, fn, live: true }; timers.push(e); return { cancel: () => { e.live = false; } }; },
  });
  /** Moves the clock, firing each live timer that falls due on the way. */
  const advance = (ms: number) => {
    const end = now + ms;
    for (;;) {
      const next = timers.filter((e) => e.live && e.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      now = next.at;
      next.live = false;
      next.fn();
    }
    now = end;
  };
  return { t, out, advance, pending: () => timers.filter((e) => e.live).length };
}

test("leading: false: work that ends within one interval sends only its final report", () => {
  const { t, out, advance } = deferredHarness();
  t({ repo: "a", done: 1, total: 3 });
  advance(20);
  t({ repo: "a", done: 2, total: 3 });
  advance(20);
  t({ repo: "a", done: 3, total: 3 });
  advance(500);
  assert.deepEqual(out.map((p) => `${p.repo}${p.done}`), ["a3"]);
});

test("leading: false: a key that stalls still shows its latest report once its interval is over", () => {
  const { t, out, advance } = deferredHarness();
  t({ repo: "a", done: 1, total: 10 });
  t({ repo: "a", done: 2, total: 10 });
  advance(99);
  assert.equal(out.length, 0);
  advance(1);
  assert.deepEqual(out.map((p) => `${p.repo}${p.done}`), ["a2"]);
  // Later reports are held for an interval after the last one sent, and shown without a further report.
  t({ repo: "a", done: 3, total: 10 });
  advance(100);
  assert.deepEqual(out.map((p) => `${p.repo}${p.done}`), ["a2", "a3"]);
  t({ repo: "a", done: 10, total: 10 });
  assert.deepEqual(out.map((p) => `${p.repo}${p.done}`), ["a2", "a3", "a10"]);
});

test("leading: false: a long burst still goes out at most once per interval, and flush stops the timer", () => {
  const { t, out, advance, pending } = deferredHarness();
  for (let i = 1; i < 1000; i++) { t({ repo: "a", done: i, total: 1000 }); advance(0.5); }
  assert.ok(out.length >= 4 && out.length <= 5, `sent ${out.length}`);
  t({ repo: "b", done: 1, total: 0 });
  t.flush();
  assert.equal(pending(), 0);
  assert.deepEqual(out.slice(-2).map((p) => `${p.repo}${p.done}`), ["a999", "b1"]);
});
