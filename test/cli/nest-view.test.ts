// NestView's piped (plain) output stays readable: every phase change is a
// line, progress and log lines at most one per level per second; --json
// writes every event. A fake clock drives the second boundaries.

import { test } from "node:test";
import assert from "node:assert/strict";
import { NestView, PLAIN_NOTE_INTERVAL_MS } from "../../src/cli/nest-view.js";
import type { LevelEvent } from "../../src/domain/events.js";

function capture(): { out: NodeJS.WritableStream; lines: () => string[] } {
  let text = "";
  return {
    out: { write: (s: string) => { text += s; return true; } } as NodeJS.WritableStream,
    lines: () => text.split("\n").filter(Boolean),
  };
}

/** One level's sync: started, `n` progress events 10 ms apart, a log line, finished. */
function syncEvents(levelPath: string[], n: number, t0: number): LevelEvent[] {
  const evs: LevelEvent[] = [{ levelPath, phase: "sync", kind: "started", time: t0 }];
  for (let i = 1; i <= n; i++) {
    evs.push({ levelPath, phase: "sync", kind: "progress", time: t0 + i * 10, message: "bootstrap: receiving", progress: { unit: "objects", done: i, total: n } });
  }
  evs.push({ levelPath, phase: "sync", kind: "log", time: t0 + n * 10 + 5, message: "bootstrap at abc" });
  evs.push({ levelPath, phase: "sync", kind: "finished", time: t0 + n * 10 + 10, durationMs: n * 10 + 10 });
  return evs;
}

function run(mode: "plain" | "json", events: LevelEvent[]): string[] {
  const c = capture();
  let clock = 0;
  const view = new NestView(mode, c.out, () => clock);
  for (const ev of events) { clock = ev.time; view.onEvent(ev); }
  if (mode === "json") view.finish();
  return c.lines();
}

test("piped: each phase change is a line, progress at most one line per level per second", () => {
  // Two levels syncing at once, 250 progress events each over 2.5 s.
  const a = syncEvents(["l0", "l1"], 250, 0);
  const b = syncEvents(["l0", "l1", "l2"], 250, 3);
  const events = [...a, ...b].sort((x, y) => x.time - y.time);
  const lines = run("plain", events);
  const phaseLines = lines.filter((l) => / (started|finished) /.test(l) || /(started|finished)$/.test(l.trimEnd()));
  assert.equal(phaseLines.length, 4);
  for (const level of ["l0/l1 ", "l0/l1/l2 "]) {
    const notes = lines.filter((l) => l.startsWith(level) && / (progress|log) /.test(l));
    // 2.5 s of events: at most one per started second (0, 1, 2).
    assert.ok(notes.length >= 1 && notes.length <= Math.ceil(2510 / PLAIN_NOTE_INTERVAL_MS), `${level}: ${notes.length}`);
  }
  assert.ok(lines.length <= 4 + 2 * 3, `${lines.length} lines`);
});

test("--json writes every event, progress included", () => {
  const events = syncEvents(["l0", "l1"], 250, 0);
  const lines = run("json", events);
  assert.equal(lines.length, events.length);
  assert.equal(lines.map((l) => JSON.parse(l) as { kind: string }).filter((e) => e.kind === "progress").length, 250);
});

// How a configure step's batched output lines look: piped, each line under its level and phase;
// on a terminal, the running level's row shows the step's latest line live.
function sink() {
  let text = "";
  return { out: { write: (s: string) => { text += s; return true; } } as unknown as NodeJS.WritableStream, text: () => text };
}

const ev = (e: Partial<LevelEvent>): LevelEvent => ({ levelPath: ["l0", "l1"], phase: "configure", kind: "log", time: 0, ...e });

test("piped: a batch of step lines prints one line per output line, each under its level and phase", () => {
  const s = sink();
  const v = new NestView("plain", s.out, () => 0);
  v.onEvent(ev({ message: "pve-config| one\npve-config| two\npve-config| three" }));
  const lines = s.text().trimEnd().split("\n");
  assert.equal(lines.length, 3);
  for (const [i, w] of ["one", "two", "three"].entries()) {
    assert.match(lines[i]!, new RegExp(`^l0/l1\\s+configure\\s+log\\s+pve-config\\| ${w}$`));
  }
});

test("on a terminal: the running level's row shows the step's latest line, and a multi-line failure stays one row", () => {
  const s = sink();
  const v = new NestView("tty", s.out, () => 0);
  v.onEvent(ev({ kind: "started" }));
  v.onEvent(ev({ message: "pve-config| first\npve-config| latest" }));
  assert.match(s.text().split("\n").filter(Boolean).pop()!, /configure .*pve-config\| latest$/);
  v.onEvent(ev({ kind: "failed", failure: { code: "StepFailed", message: "step x of l0/l1 exited 7; last lines:\nboom" } }));
  const rows = s.text().split("\x1b[2K").pop()!;
  assert.ok(!rows.includes("boom"), "the failure's last lines broke the row");
  v.finish();
});

test("piped: a configure step's output prints whole even within a second, while hsd's own notes stay thinned", () => {
  const s = sink();
  let clock = 0;
  const v = new NestView("plain", s.out, () => clock);
  v.onEvent(ev({ message: "bootstrap at 0123456789ab", time: 0 }));
  clock = 10; v.onEvent(ev({ message: "ansible at 0123456789ab", time: 10 }));
  clock = 20; v.onEvent(ev({ message: "pve-config| layout ok\npve-config| site.yaml read", time: 20 }));
  clock = 30; v.onEvent(ev({ message: "pve-config| done", time: 30 }));
  const text = s.text();
  assert.match(text, /bootstrap at/);
  assert.doesNotMatch(text, /ansible at/, "hsd's second note within the second was not thinned");
  for (const w of ["layout ok", "site.yaml read", "done"]) assert.match(text, new RegExp(`pve-config\\| ${w}`));
});

test("a level's reboot shows inside its configure: piped it is always a line, on a terminal the level's row says so while configure runs", () => {
  const l2 = ["l0", "l1", "l2"];
  const evs: LevelEvent[] = [
    { levelPath: l2, phase: "configure", kind: "started", time: 0, budgetMs: 60_000 },
    { levelPath: l2, phase: "configure", kind: "log", time: 10, message: "note one" },
    { levelPath: l2, phase: "configure", kind: "rebooting", time: 20, message: "step install: new kernel" },
    { levelPath: l2, phase: "configure", kind: "finished", time: 900, durationMs: 900 },
  ];
  const plain = run("plain", evs);
  assert.ok(plain.some((l) => /^l0\/l1\/l2\s+configure\s+rebooting\s+step install: new kernel$/.test(l)), plain.join("\n"));
  const c = capture();
  const view = new NestView("tty", c.out, () => 20);
  for (const ev of evs.slice(0, 3)) view.onEvent(ev);
  const last = c.lines().at(-1)!;
  assert.match(last, /l2\s+\S+ configure .*rebooting: step install: new kernel/);
  view.finish();
});
