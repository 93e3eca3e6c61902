// How a configure step's batched output lines look to the operator: piped,
// each line on its own under its level and phase; on a terminal, the running
// level's row shows the step's latest line live.

import { test } from "node:test";
import assert from "node:assert/strict";
import { NestView } from "../../src/cli/nest-view.js";
import type { LevelEvent } from "../../src/domain/events.js";

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
