// The configure step runner with real processes: argv in the step's tree,
// a secret-free environment naming the level, batched output with the last
// lines kept for a failure, budgets and cancellation that take the whole
// process group down, and a per-step journal a re-run resumes from.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, mkdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load-config.js";
import { homestakLayout } from "../../src/homestak/layout.js";
import { StepRunner, stepBaseEnv } from "../../src/homestak/step-runner.js";
import { Journal } from "../../src/nest/journal.js";
import { silentLogger } from "../../src/log/logger.js";
import { HsError } from "../../src/domain/errors.js";

const PARENT = "parent: { host: 10.0.0.1, port: 2200, host_key_fingerprint: \"SHA256:abc\" }\nlevel: { name: l2, depth: 2 }\n";

async function harness(stepsYaml: string, env: NodeJS.ProcessEnv = { PATH: process.env.PATH }) {
  const dir = await mkdtemp(join(tmpdir(), "hsd-steps-"));
  const config = parseConfig(`${PARENT}${stepsYaml}`, "hsd.yaml", { root: dir });
  const layout = homestakLayout(config);
  await mkdir(layout.worktree("iac-driver"), { recursive: true });
  const journal = new Journal(join(dir, "journal.json"));
  await journal.load();
  const runner = new StepRunner({
    config, layout, journal, log: silentLogger(), levelPath: ["l0", "l1", "l2"], now: () => Date.now(),
    baseEnv: stepBaseEnv(env), killGraceMs: 200,
  });
  const lines: string[] = [];
  let batches = 0;
  const emit = (ev: { message: string }) => { batches++; lines.push(...ev.message.split("\n")); };
  return { dir, layout, journal, runner, lines, batches: () => batches, emit, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

const fails = (code: string, check: (e: HsError) => void = () => {}) => (e: unknown) => {
  assert.ok(e instanceof HsError, String(e));
  assert.equal(e.code, code, e.message);
  check(e);
  return true;
};

test("a step runs its argv in its repo's tree with the level in its environment and none of hsd's", async () => {
  const h = await harness(`configure:
  steps:
    - name: show
      run: [sh, -c, 'pwd; env | sort']
      cwd: iac-driver
      env: { COLOR: "no" }
`, { PATH: process.env.PATH, HOME: "/root", HSD_FAULTS: "l2:x", SOME_TOKEN: "leak" });
  try {
    await h.runner.run({ fresh: false }, h.emit, new AbortController().signal);
    const out = h.lines.map((l) => l.replace(/^show\| /, ""));
    assert.ok(out.includes(h.layout.worktree("iac-driver")), out.join("\n"));
    for (const kv of [`HOMESTAK_ROOT=${h.layout.root}`, "HSD_LEVEL_NAME=l2", "HSD_LEVEL_PATH=l0/l1/l2", "HSD_LEVEL_DEPTH=2",
      "HSD_PARENT_ADDRESS=10.0.0.1:2200", "HSD_STEP=show", "COLOR=no", "HOME=/root"]) assert.ok(out.includes(kv), kv);
    assert.ok(!out.some((l) => l.startsWith("HSD_FAULTS=") || l.startsWith("SOME_TOKEN=")), "hsd's own environment leaked");
  } finally { await h.cleanup(); }
});

test("a chatty step's output arrives whole and in order, in far fewer events than lines", async () => {
  const h = await harness(`configure:
  steps:
    - name: chatty
      run: [sh, -c, 'i=0; while [ $i -lt 20000 ]; do echo "line $i"; i=$((i+1)); done']
`);
  try {
    await h.runner.run({ fresh: false }, h.emit, new AbortController().signal);
    const out = h.lines.filter((l) => l.startsWith("chatty| line ")).map((l) => Number(l.slice("chatty| line ".length)));
    assert.equal(out.length, 20000);
    assert.ok(out.every((n, i) => n === i), "out of order");
    assert.ok(h.batches() < 20000 / 10, `${h.batches()} events for 20000 lines`);
  } finally { await h.cleanup(); }
});

test("a failing step is StepFailed with level, step, exit code and last lines; a re-run skips the finished step and re-runs it", async () => {
  const h = await harness(`configure:
  steps:
    - name: first
      run: [sh, -c, 'echo ran >> "$HOMESTAK_ROOT/first.log"']
    - name: flaky
      run: [sh, -c, 'echo "about to fail"; [ -e "$HOMESTAK_ROOT/ok" ] || exit 7']
    - name: deep-only
      run: [sh, -c, 'echo no >> "$HOMESTAK_ROOT/deep.log"']
      when: { min_depth: 3 }
`);
  try {
    await assert.rejects(h.runner.run({ fresh: false }, h.emit, new AbortController().signal), fails("StepFailed", (e) => {
      assert.deepEqual([e.details.level, e.details.step, e.details.exitCode], ["l0/l1/l2", "flaky", 7]);
      assert.deepEqual(e.details.lastLines, ["about to fail"]);
    }));
    const j = h.journal.snapshot().steps!;
    assert.equal(j.first!.kind, "finished");
    assert.equal(j.flaky!.kind, "failed");
    await mkdir(join(h.layout.root, "ok"));
    await h.runner.run({ fresh: false }, h.emit, new AbortController().signal);
    assert.equal(await readFile(join(h.layout.root, "first.log"), "utf8"), "ran\n", "first ran twice");
    assert.equal(h.journal.snapshot().steps!.flaky!.kind, "finished");
    assert.equal(await readFile(join(h.layout.root, "deep.log"), "utf8").catch(() => "absent"), "absent", "when: min_depth ignored");
    // fresh (sync --configure) runs every step again.
    await h.runner.run({ fresh: true }, h.emit, new AbortController().signal);
    assert.equal(await readFile(join(h.layout.root, "first.log"), "utf8"), "ran\nran\n");
  } finally { await h.cleanup(); }
});

/** Waits (bounded) until no process is left in group `pgid`. */
async function groupGone(pgid: number, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    try { process.kill(-pgid, 0); } catch { return true; }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const LONG = `configure:
  steps:
    - name: long
      run: [sh, -c, 'sleep 300 & echo "pgid $$"; trap "" TERM; wait']
      budget: BUDGET
`;

test("a step over its budget: its whole process group (a TERM-ignoring shell and its background child) is killed, PhaseTimeout naming the step", async () => {
  const h = await harness(LONG.replace("BUDGET", "1s"));
  try {
    await assert.rejects(h.runner.run({ fresh: false }, h.emit, new AbortController().signal), fails("PhaseTimeout", (e) => {
      assert.equal(e.details.step, "long");
      assert.equal(e.details.level, "l0/l1/l2");
    }));
    const pgid = Number(/long\| pgid (\d+)/.exec(h.lines.join("\n"))![1]);
    assert.ok(await groupGone(pgid), "process group still alive");
    assert.equal(h.journal.snapshot().steps!.long!.kind, "failed");
  } finally { await h.cleanup(); }
});

test("cancelling a running step kills its process group and is Cancelled", async () => {
  const h = await harness(LONG.replace("BUDGET", "5m"));
  try {
    const ac = new AbortController();
    let pgid = 0;
    const running = h.runner.run({ fresh: false }, (ev) => {
      h.emit(ev);
      const m = /long\| pgid (\d+)/.exec(ev.message);
      if (m) { pgid = Number(m[1]); ac.abort(); }
    }, ac.signal);
    await assert.rejects(running, fails("Cancelled"));
    assert.ok(pgid > 0);
    assert.ok(await groupGone(pgid), "process group still alive");
  } finally { await h.cleanup(); }
});

test("a step whose program or directory is missing fails as StepFailed, not a crash", async () => {
  const h = await harness("configure:\n  steps:\n    - { name: nope, run: [no-such-program-hsd] }\n");
  try {
    await assert.rejects(h.runner.run({ fresh: false }, h.emit, new AbortController().signal), fails("StepFailed"));
  } finally { await h.cleanup(); }
  const g = await harness("configure:\n  steps:\n    - { name: nodir, run: [true], cwd: tofu }\n");
  try {
    await assert.rejects(g.runner.run({ fresh: false }, g.emit, new AbortController().signal), fails("StepFailed"));
  } finally { await g.cleanup(); }
});
