// Child process of stream-events-memory.test.ts: streams N log events (each a
// distinct ~500-byte batch of step output) through hsctl's real streamEvents
// in --json mode into a byte-counting stdout, and prints its peak RSS growth.
// Run alone so no other test's heap shares its RSS. Imported by: nothing (spawned).

import { streamEvents } from "../../src/cli/commands/stream-events.js";
import type { CliIo } from "../../src/cli/command.js";
import type { LevelEvent } from "../../src/domain/events.js";

const n = Number(process.argv[2] ?? "200000");
let bytes = 0;
const io: CliIo = {
  out: (t) => { bytes += t.length; }, err: () => {}, env: {}, cwd: "/", tty: false,
  signal: new AbortController().signal, outReady: () => Promise.resolve(),
};

async function* events(count: number): AsyncGenerator<LevelEvent> {
  const levelPath = ["l0", "l1", "l2"];
  yield { levelPath, phase: "configure", kind: "started", time: 0 };
  for (let i = 0; i < count; i++) {
    yield { levelPath, phase: "configure", kind: "log", time: i, message: `playbook| TASK [line ${i}] ${"x".repeat(480)} ${i}` };
  }
  yield { levelPath, phase: "configure", kind: "finished", time: count, durationMs: count };
}

await streamEvents(events(2000), io, true, "warm-up");
global.gc?.();
const before = process.resourceUsage().maxRSS;
const r = await streamEvents(events(n), io, true, "sync");
const after = process.resourceUsage().maxRSS;
process.stdout.write(`${JSON.stringify({ code: r.code, growthKiB: after - before, bytes })}\n`);
