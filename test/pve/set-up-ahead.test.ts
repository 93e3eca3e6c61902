// beginAhead (src/providers/pve/set-up-ahead.ts): work begun before configure
// holds its lines until configure joins, then hands them over in order and
// follows live; the joining configure's signal ends it; its outcome is shared.

import { test } from "node:test";
import assert from "node:assert/strict";
import { beginAhead } from "../../src/providers/pve/set-up-ahead.js";
import type { LocalEvent } from "../../src/domain/events.js";

const line = (message: string): LocalEvent => ({ phase: "configure", kind: "log", message });

test("lines written before the join come first and in order, then the rest live; both parts' outcomes are the joiner's", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  let joinedSeen = false;
  const ahead = beginAhead(new AbortController().signal, async (emit) => {
    emit(line("a"));
    emit(line("b"));
    return 42;
  }, async (r, emit, _signal, joined) => {
    emit(line(`then ${r}`));
    await joined;
    joinedSeen = true;
    await gate;
    emit(line("live"));
    return true;
  });
  const got: string[] = [];
  const { first, then } = ahead.join((ev) => got.push(ev.message ?? ""), new AbortController().signal);
  assert.equal(await first, 42);
  // Everything written so far was handed over at the join, nothing twice.
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(got, ["a", "b", "then 42"]);
  release();
  assert.equal(await then, true);
  assert.ok(joinedSeen);
  assert.deepEqual(got, ["a", "b", "then 42", "live"]);
  await ahead.settled;
});

test("the joining configure's signal ends the work; a failure is the joiner's to see, and settled never rejects", async () => {
  const ahead = beginAhead(new AbortController().signal, async () => "ok", (_r, _emit, signal) => new Promise<boolean>((_resolve, reject) => {
    const end = () => reject(signal.reason);
    if (signal.aborted) end(); else signal.addEventListener("abort", end, { once: true });
  }));
  const stop = new AbortController();
  const { then } = ahead.join(() => {}, stop.signal);
  stop.abort(new Error("configure cancelled"));
  await assert.rejects(then, /configure cancelled/);
  await ahead.settled;

  const failing = beginAhead(new AbortController().signal, async () => { throw Object.assign(new Error("pveum failed"), { code: "CommandFailed" }); }, async () => true);
  await failing.settled; // no unhandled rejection, nobody joined
  const j = failing.join(() => {}, new AbortController().signal);
  await assert.rejects(j.first, (e: { code?: string }) => e.code === "CommandFailed");
  await assert.rejects(j.then, (e: { code?: string }) => e.code === "CommandFailed");
});

test("the begin signal ends work nobody joined", async () => {
  const level = new AbortController();
  let ended = false;
  const ahead = beginAhead(level.signal, async () => 1, (_r, _e, signal) => new Promise<boolean>((resolve) => {
    const end = () => { ended = true; resolve(false); };
    if (signal.aborted) end(); else signal.addEventListener("abort", end, { once: true });
  }));
  level.abort();
  await ahead.settled;
  assert.ok(ended);
});
