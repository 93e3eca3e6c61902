// Piped `hsctl nest --depth 3` output stays readable: one line per phase
// change, every configure step output line, and at most one other
// progress/log line per level per second, while
// --json still carries every event. Level 3 emits 200 log events in its
// configure phase (HSD_FAULTS) to make the difference certain.
//
// Line budget (stated): at most 150 lines for a piped depth-3 nest, table
// included; measured about 70-80. The per-level bound, one note line per
// second of the run, is checked as well.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines } from "../helpers/hsctl.js";

const LINE_BUDGET = 150;
const EMITTED = 200;
const FAULTS = { HSD_FAULTS: `l3:configure:emit-${EMITTED}x1` };
const { root } = await e2eTree("hsd-piped-");
const envFor = (name: string) => ({ HSD_ROOT: join(root, name, "l0"), HSD_SOCKET: "", ...FAULTS });
const PHASE_CHANGE = new Set(["started", "finished", "skipped", "failed"]);

test(`piped nest --depth 3 prints under ${LINE_BUDGET} lines; --json carries every event`, async () => {
  const t0 = performance.now();
  const plain = await hsctl(["nest", "--depth", "3"], envFor("plain"), 300_000);
  const seconds = (performance.now() - t0) / 1000;
  assert.equal(plain.code, 0, plain.stderr + plain.stdout.slice(-2000));
  const json = await hsctl(["nest", "--depth", "3", "--json"], envFor("json"), 300_000);
  assert.equal(json.code, 0, json.stderr + json.stdout.slice(-2000));
  const destroyed = await Promise.all(["plain", "json"].map((n) => hsctl(["destroy"], envFor(n), 120_000)));
  for (const d of destroyed) assert.equal(d.code, 0, d.stderr);

  const lines = plain.stdout.split("\n").filter(Boolean);
  console.log(`# piped nest --depth 3: ${lines.length} lines in ${seconds.toFixed(1)} s (budget ${LINE_BUDGET}); --json: ${jsonLines(json.stdout).length} events`);
  assert.ok(lines.length <= LINE_BUDGET, `${lines.length} lines:\n${plain.stdout}`);

  // Every phase change is a line: as many as the JSON run's phase-change events.
  const events = jsonLines(json.stdout);
  const kindOf = (l: string) => l.split(/\s+/)[2];
  const phaseLines = lines.filter((l) => /^l0[/\w-]*\s/.test(l) && PHASE_CHANGE.has(kindOf(l) ?? ""));
  assert.equal(phaseLines.length, events.filter((e) => PHASE_CHANGE.has(e.kind)).length);

  // A configure step's own output prints whole at every level (the demo step's lines).
  const stepLine = (l: string) => kindOf(l) === "log" && /^\S+\s+configure\s+log\s+[A-Za-z0-9][A-Za-z0-9._-]*\| /.test(l);
  for (const level of ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]) {
    assert.ok(lines.some((l) => l.startsWith(`${level} `) && stepLine(l)), `no step output from ${level}:\n${plain.stdout}`);
  }
  // hsd's own progress and log lines: at most one per level per started second.
  const notes = new Map<string, number>();
  for (const l of lines) {
    if ((kindOf(l) === "progress" || kindOf(l) === "log") && !stepLine(l)) notes.set(l.split(/\s+/)[0]!, (notes.get(l.split(/\s+/)[0]!) ?? 0) + 1);
  }
  for (const [level, n] of notes) assert.ok(n <= Math.ceil(seconds) + 1, `${level}: ${n} note lines in ${seconds.toFixed(1)} s`);

  // --json: all of level 3's emitted events, in order.
  const seqs = events.filter((e) => e.level === "l0/l1/l2/l3" && e.kind === "log" && /^fault: event \d+\//.test(e.message ?? ""))
    .map((e) => Number(/event (\d+)\//.exec(e.message)![1]));
  assert.deepEqual(seqs, Array.from({ length: EMITTED }, (_, i) => i + 1));
});
