// A level's configure with real step processes and a real journal: the
// repos' read that opens it runs beside the steps (it only feeds the repo
// lines), the repo lines still come first with every step event after them,
// and a failed read ends the steps and is what the configure fails with.
// The read is the one thing held here: it decides when it answers.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, mkdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load-config.js";
import { homestakLayout } from "../../src/homestak/layout.js";
import { StepRunner, stepBaseEnv, type StepJournal, type StepRecord } from "../../src/homestak/step-runner.js";
import { Journal } from "../../src/nest/journal.js";
import { silentLogger } from "../../src/log/logger.js";
import { LevelConfigure } from "../../src/level/level-configure.js";
import { HsError, StateCorruptError } from "../../src/domain/errors.js";
import type { LocalEvent, RepoState } from "../../src/domain/events.js";

const PARENT = "parent: { host: 10.0.0.1, port: 2200, host_key_fingerprint: \"SHA256:abc\" }\nlevel: { name: l2, depth: 2 }\n";

/** Resolves when `kind` is journaled for any step; rejects after `ms` so a serialised configure fails instead of hanging. */
function stepJournaled(journal: Journal, kind: StepRecord["kind"], ms = 10_000): { journal: StepJournal; reached: Promise<void> } {
  let hit!: () => void;
  const reached = new Promise<void>((resolve, reject) => {
    hit = resolve;
    setTimeout(() => reject(new Error(`no step was journaled ${kind} while the repos were read: the read held the steps up`)), ms).unref();
  });
  return {
    reached,
    journal: {
      steps: () => journal.steps(),
      updateSteps: async (fn) => {
        await journal.updateSteps(fn);
        if (Object.values(journal.steps()).some((s) => s.kind === kind)) hit();
      },
    },
  };
}

async function harness(stepsConfig: string, verify: (stepJournal: { reached: Promise<void> }) => Promise<RepoState[]>, waitFor: StepRecord["kind"]) {
  const dir = await mkdtemp(join(tmpdir(), "hsd-level-configure-"));
  const config = parseConfig(`${PARENT}${stepsConfig}`, "hsd.yaml", { root: dir });
  const layout = homestakLayout(config);
  await mkdir(layout.worktree("iac-driver"), { recursive: true });
  // Every journal write as it is about to land (what a crash right after it leaves).
  const writes: { steps?: Record<string, StepRecord>; configured?: unknown }[] = [];
  const journal = new Journal(join(dir, "journal.json"), { beforeRename: async (tmp) => { writes.push(JSON.parse(await readFile(tmp, "utf8"))); } });
  await journal.load();
  const watched = stepJournaled(journal, waitFor);
  const steps = new StepRunner({
    config, layout, journal: watched.journal, log: silentLogger(), levelPath: ["l0", "l1", "l2"], now: () => Date.now(),
    baseEnv: stepBaseEnv({ PATH: process.env.PATH }), killGraceMs: 200,
  });
  const events: LocalEvent[] = [];
  const configure = new LevelConfigure(
    { config, log: silentLogger(), clock: { now: () => Date.now() }, journal, steps, repos: { verify: () => verify(watched) } },
    (_sink, ev) => { events.push(ev); },
  );
  return { dir, journal, writes, configure, events, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** configure.steps, each run in iac-driver's tree. */
const stepsYaml = (...steps: [name: string, run: string][]) =>
  `configure:\n  steps:\n${steps.map(([name, run]) => `    - { name: ${name}, run: ${run}, cwd: iac-driver }\n`).join("")}`;

const repo = (name: string): RepoState => ({ name, servedCommit: "a".repeat(40), worktreeCommit: "b".repeat(40), dirty: false, dirtyFiles: [] });

test("the steps run while the repos are read; the repo lines still open the configure and no step event is lost", async () => {
  // The read answers only once the step has started: a configure that waits for the read first never gets there.
  const h = await harness(stepsYaml(["show", "[sh, -c, 'echo one; echo two']"]), async (s) => { await s.reached; return [repo("bootstrap"), repo("iac-driver")]; }, "running");
  try {
    await h.configure.run(() => {}, new AbortController().signal, { fresh: false });
    const messages = h.events.map((e) => e.message ?? "");
    assert.deepEqual(messages.slice(0, 2), [`bootstrap at ${"b".repeat(12)}`, `iac-driver at ${"b".repeat(12)}`]);
    assert.match(messages[2]!, /^step show: sh -c/);
    assert.ok(messages.some((m) => m.includes("one") && m.includes("two")), messages.join("\n"));
    assert.match(messages[messages.length - 1]!, /^step show: finished in \d+ ms$/);
    assert.ok(h.events.every((e) => e.phase === "configure"));
    assert.equal(h.journal.steps().show?.kind, "finished");
    assert.equal(h.journal.snapshot().configured?.kind, "finished");
  } finally { await h.cleanup(); }
});

test("the last step's finished record and the configured mark land in one journal write; earlier steps keep their own", async () => {
  const h = await harness(stepsYaml(["one", "[sh, -c, 'echo one']"], ["two", "[sh, -c, 'echo two']"]), async () => [repo("bootstrap")], "running");
  try {
    await h.configure.run(() => {}, new AbortController().signal, { fresh: false });
    const kinds = h.writes.map((w) => `${w.steps?.one?.kind ?? "-"}/${w.steps?.two?.kind ?? "-"}/${w.configured ? "configured" : "-"}`);
    // A crash after any write leaves a state a re-run resumes from: never "configured" with a step not finished.
    assert.deepEqual(kinds, ["running/-/-", "finished/-/-", "finished/running/-", "finished/finished/configured"]);
  } finally { await h.cleanup(); }
});

test("a configure whose last step finished in an earlier run still records the configured mark", async () => {
  const h = await harness(stepsYaml(["one", "[sh, -c, 'echo one']"]), async () => [repo("bootstrap")], "running");
  try {
    await h.journal.updateSteps((s) => { s.one = { kind: "finished", at: 1, durationMs: 1 }; });
    await h.configure.run(() => {}, new AbortController().signal, { fresh: false });
    assert.ok(h.events.some((e) => e.message === "step one: finished in an earlier run, skipped"));
    assert.equal(h.journal.snapshot().configured?.kind, "finished");
    assert.equal(h.writes.length, 2);
  } finally { await h.cleanup(); }
});

test("a failed repos' read ends the step it ran beside and is what the configure fails with", async () => {
  const h = await harness(stepsYaml(["long", "[sleep, \"30\"]"]), async (s) => { await s.reached; throw new StateCorruptError("the trees cannot be read"); }, "running");
  try {
    await assert.rejects(h.configure.run(() => {}, new AbortController().signal, { fresh: false }), (e: unknown) => {
      assert.ok(e instanceof HsError, String(e));
      assert.equal(e.code, "StateCorrupt");
      return true;
    });
    // The step was stopped, not left to run its 30 s, and journaled so the next configure runs it again.
    assert.equal(h.journal.steps().long?.kind, "failed");
    assert.equal(h.journal.snapshot().configured, undefined);
    assert.ok(h.events.some((e) => /^step long: sleep 30/.test(e.message ?? "")), "the step's held events were dropped");
  } finally { await h.cleanup(); }
});
