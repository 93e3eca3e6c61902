// hsctl's event drain keeps nothing that grows with the stream: 200k log
// events of ~500 bytes (about 100 MB of step output) pass through the real
// streamEvents in a child process whose peak RSS may grow by at most 48 MiB
// (keeping the events would need well over 100 MiB). And a stdout that is not
// ready holds the stream back: no event is pulled until it drains.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { streamEvents } from "../../src/cli/commands/stream-events.js";
import type { CliIo } from "../../src/cli/command.js";
import type { LevelEvent } from "../../src/domain/events.js";

const run = promisify(execFile);
const CHILD = fileURLToPath(new URL("./stream-events-rss-child.ts", import.meta.url));
const EVENTS = 200_000;
const BOUND_KIB = 48 * 1024;

test("200k log events: hsctl's peak RSS grows by a bounded amount, not with the output", { timeout: 300_000 }, async () => {
  const { stdout } = await run(process.execPath, ["--expose-gc", "--import", "tsx", CHILD, String(EVENTS)], { timeout: 280_000, maxBuffer: 1 << 20 });
  const r = JSON.parse(stdout.trim().split("\n").pop()!) as { code: number; growthKiB: number; bytes: number };
  assert.equal(r.code, 0);
  assert.ok(r.bytes > EVENTS * 480, `every event was written (${r.bytes} bytes)`);
  assert.ok(r.growthKiB < BOUND_KIB, `peak RSS grew ${r.growthKiB} KiB for ${r.bytes} bytes of events; bound ${BOUND_KIB} KiB`);
});

test("a stdout that is not ready holds the event stream back", async () => {
  let pulled = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  let firstWait!: () => void;
  const waiting = new Promise<void>((r) => { firstWait = r; });
  const io: CliIo = {
    out: () => {}, err: () => {}, env: {}, cwd: "/", tty: false, signal: new AbortController().signal,
    outReady: () => { firstWait(); return gate; },
  };
  async function* events(): AsyncGenerator<LevelEvent> {
    for (let i = 0; i < 100; i++) { pulled++; yield { levelPath: ["l0"], phase: "sync", kind: "log", time: i, message: `line ${i}` }; }
  }
  const done = streamEvents(events(), io, true, "sync");
  await waiting;
  // The drain is blocked on the first event: the generator has not been asked for a second.
  await new Promise((r) => setImmediate(r));
  assert.equal(pulled, 1);
  release();
  assert.equal((await done).code, 0);
  assert.equal(pulled, 100);
});
