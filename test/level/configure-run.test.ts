// The configure a level resumes after its reboot (src/level/configure-run.ts):
// a caller attaching late gets the kept events (bounded: older ones are
// counted in one note), then the live ones, then the run's end; a run that
// ended before anyone attached keeps its end (a failure too) for the first caller.

import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigureRun } from "../../src/level/configure-run.js";
import type { EventSink, LevelEvent } from "../../src/domain/events.js";
import { HsError, StepFailedError } from "../../src/domain/errors.js";

const ev = (message: string): LevelEvent => ({ levelPath: ["l2"], phase: "configure", kind: "log", time: 0, message });

test("a late caller gets the last events kept (older ones counted), then the live ones, then the end", async () => {
  let sink!: EventSink;
  let finish!: () => void;
  const run = new ConfigureRun((s) => { sink = s; return new Promise<void>((r) => { finish = r; }); }, 3);
  for (let i = 1; i <= 5; i++) sink(ev(`e${i}`));
  const seen: string[] = [];
  const attached = run.attach((e) => seen.push(e.message ?? ""), new AbortController().signal);
  sink(ev("e6"));
  finish();
  await attached;
  assert.deepEqual(seen, ["2 earlier events of this configure were not kept", "e3", "e4", "e5", "e6"]);
  assert.equal(run.claimed, true);
});

test("a run that failed before anyone attached hands its failure to the first caller; a caller's abort leaves the run alone", async () => {
  const run = new ConfigureRun(async (s) => { s(ev("step a")); throw new StepFailedError("step a exited 1"); });
  await new Promise((r) => setImmediate(r));
  assert.equal(run.settled, true);
  assert.equal(run.claimed, false);
  const seen: string[] = [];
  await assert.rejects(run.attach((e) => seen.push(e.message ?? ""), new AbortController().signal), (e: unknown) => e instanceof HsError && e.code === "StepFailed");
  assert.deepEqual(seen, ["step a"]);

  let finish!: () => void;
  const long = new ConfigureRun(() => new Promise<void>((r) => { finish = r; }));
  const ac = new AbortController();
  const first = long.attach(() => {}, ac.signal);
  ac.abort(new Error("caller gone"));
  await assert.rejects(first);
  assert.equal(long.claimed, false);
  finish();
  await long.attach(() => {}, new AbortController().signal);
  assert.equal(long.claimed, true);
});
