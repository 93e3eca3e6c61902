// A configure step that reboots its machine itself (homestak's pve-config:
// `systemctl reboot`, then sleep until killed), with real step processes, a
// real journal and the "is the machine going down?" probe injected: hsd
// stopped while a step runs and the machine going down journals the step as
// rebooting, announces it, and the next run resumes it; stopped without it
// (an operator's stop) is today's Cancelled; a step killed first waits for
// the probe's answer before anything is journaled; the reboot cap still holds.
// Also the real probes' parsing (systemd's state and jobs, a local marker).

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, mkdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load-config.js";
import { homestakLayout } from "../../src/homestak/layout.js";
import { StepRunner, rebootPendingIn, stepBaseEnv, type StepsOutcome } from "../../src/homestak/step-runner.js";
import { GoingDown, SYSTEM_REBOOT_REASON, type GoingDownProbe } from "../../src/homestak/going-down.js";
import { Journal } from "../../src/nest/journal.js";
import { silentLogger } from "../../src/log/logger.js";
import { HsError } from "../../src/domain/errors.js";
import { localLevelGoingDown, shutdownJobQueued, systemdGoingDown } from "../../src/daemon/going-down-probe.js";
import { levelPaths } from "../../src/config/level-layout.js";
import type { CommandRunner } from "../../src/util/command-runner.js";

const PARENT = "parent: { host: 10.0.0.1, port: 2200, host_key_fingerprint: \"SHA256:abc\" }\nlevel: { name: l2, depth: 2 }\n";

// before: counts its runs. install: counts its runs; on its first run says its
// pid (its process group: steps run in groups of their own) and sleeps until
// killed, as homestak's scenario does after `systemctl reboot`. after: counts.
const STEPS = (d: string) => `configure:
  steps:
    - name: before
      run: [sh, -c, 'echo before >> ${d}/runs']
    - name: install
      run: [sh, -c, 'echo "install $HSD_STEP_REBOOTS" >> ${d}/runs; [ "$HSD_STEP_REBOOTS" = 0 ] || exit 0; echo "pgid $$"; exec sleep 300']
    - name: after
      run: [sh, -c, 'echo after >> ${d}/runs']
`;

interface Ev { kind: string; message: string }

async function harness(steps = STEPS) {
  const dir = await mkdtemp(join(tmpdir(), "hsd-step-down-"));
  const config = parseConfig(`${PARENT}${steps(dir)}`, "hsd.yaml", { root: dir });
  const layout = homestakLayout(config);
  await mkdir(layout.root, { recursive: true });
  const journalPath = join(dir, "journal.json");
  /** A fresh journal object per run, as after a boot: only what was persisted counts. */
  const runner = async (probe: GoingDownProbe) => {
    const journal = new Journal(journalPath);
    await journal.load();
    const events: Ev[] = [];
    let sleeping!: (pgid: number) => void;
    const asleep = new Promise<number>((r) => { sleeping = r; });
    const emit = (ev: Ev) => {
      events.push(ev);
      const m = /install\| pgid (\d+)/.exec(ev.message);
      if (m) sleeping(Number(m[1]));
    };
    return {
      journal, events, emit, asleep,
      runner: new StepRunner({
        config, layout, journal, log: silentLogger(), levelPath: ["l0", "l1", "l2"], now: () => Date.now(),
        baseEnv: stepBaseEnv({ PATH: process.env.PATH }), killGraceMs: 2_000,
        rebootRequestPath: join(dir, "reboot-request"), goingDown: new GoingDown(probe, 5_000, silentLogger()),
      }),
    };
  };
  const runs = async () => (await readFile(join(dir, "runs"), "utf8").catch(() => "")).split("\n").filter(Boolean);
  return { dir, journalPath, runner, runs, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

const yes: GoingDownProbe = async () => true;
const no: GoingDownProbe = async () => false;
const alive = async (pid: number) => /^State:\s+[^Z]/m.test(await readFile(`/proc/${pid}/status`, "utf8").catch(() => ""));
const code = (c: string) => (e: unknown) => e instanceof HsError && e.code === c;

test("hsd stopped while a step runs and the machine going down: the step is journaled rebooting, announced, and resumed on the next run", async () => {
  const h = await harness();
  try {
    const first = await h.runner(yes);
    const done = first.runner.run({ fresh: false }, first.emit, new AbortController().signal);
    const pgid = await first.asleep;
    assert.equal(await first.runner.stopForShutdown(1_000), true);
    const out: StepsOutcome = await done;
    assert.deepEqual(out.reboot, { step: "install", reason: SYSTEM_REBOOT_REASON, reboots: 1, bySystem: true });
    assert.ok(!(await alive(pgid)), "the step outlived the machine's reboot");
    const rec = first.journal.steps().install!;
    assert.equal(rec.kind, "rebooting");
    assert.equal(rec.reboots, 1);
    assert.ok(rebootPendingIn(first.journal.steps()));
    const announced = first.events.filter((e) => e.kind === "rebooting").map((e) => e.message);
    assert.deepEqual(announced, [`step install: ${SYSTEM_REBOOT_REASON}`]);
    assert.match(announced[0]!, /install: the system is rebooting/);
    assert.deepEqual(await h.runs(), ["before", "install 0"]);

    // The boot: the same step again (counted once), not the one before it; then the rest.
    const second = await h.runner(no);
    assert.deepEqual(await second.runner.run({ fresh: false }, second.emit, new AbortController().signal), {});
    assert.deepEqual(await h.runs(), ["before", "install 0", "install 1", "after"]);
    assert.equal(second.journal.steps().install!.kind, "finished");
    assert.equal(second.journal.steps().install!.reboots, 1);
  } finally { await h.cleanup(); }
});

test("hsd stopped while a step runs, the machine staying up (systemctl stop hsd): nothing changes, the API's cancel ends the step as Cancelled", async () => {
  const h = await harness();
  try {
    const r = await h.runner(no);
    const ac = new AbortController();
    const done = r.runner.run({ fresh: false }, r.emit, ac.signal);
    const pgid = await r.asleep;
    assert.equal(await r.runner.stopForShutdown(1_000), false);
    assert.ok(await alive(pgid), "the step was stopped though the machine stays up");
    assert.equal(r.journal.steps().install!.kind, "running");
    ac.abort(); // what the API's close does to the configure call
    await assert.rejects(done, code("Cancelled"));
    assert.equal(r.journal.steps().install!.kind, "failed");
    assert.ok(!r.events.some((e) => e.kind === "rebooting"));
    assert.ok(!rebootPendingIn(r.journal.steps()));
  } finally { await h.cleanup(); }
});

test("a step killed before hsd hears of the stop: nothing is journaled until the probe answers; yes is a reboot, no is today's StepFailed (143)", async () => {
  for (const answer of [true, false]) {
    const h = await harness();
    try {
      let called!: () => void;
      const asked = new Promise<void>((r) => { called = r; });
      let reply!: (v: boolean) => void;
      const r = await h.runner(() => { called(); return new Promise<boolean>((res) => { reply = res; }); });
      const done = r.runner.run({ fresh: false }, r.emit, new AbortController().signal);
      const pgid = await r.asleep;
      process.kill(-pgid, "SIGTERM"); // systemd's stop reaching the step first
      await asked;
      // The step is dead and the answer pending: its record is still the one from its start.
      assert.equal(JSON.parse(await readFile(h.journalPath, "utf8")).steps.install.kind, "running");
      reply(answer);
      if (answer) {
        const out = await done;
        assert.equal(out.reboot?.bySystem, true);
        assert.equal(r.journal.steps().install!.kind, "rebooting");
      } else {
        await assert.rejects(done, (e: unknown) => code("StepFailed")(e) && (e as HsError).details?.exitCode === 143);
        assert.equal(r.journal.steps().install!.kind, "failed");
      }
    } finally { await h.cleanup(); }
  }
});

test("a step the machine's reboot interrupts a 4th time fails as StepFailed, like a 4th request", async () => {
  // A scenario stuck in its loop: it sleeps for the reboot whatever HSD_STEP_REBOOTS says.
  const h = await harness((d) => STEPS(d).replace('[ "$HSD_STEP_REBOOTS" = 0 ] || exit 0; ', ""));
  try {
    await writeFile(h.journalPath, JSON.stringify({ version: 1, children: {}, steps: {
      before: { kind: "finished", at: 1 }, install: { kind: "rebooting", at: 1, reboots: 3, reason: "x" },
    } }));
    const r = await h.runner(yes);
    const done = r.runner.run({ fresh: false }, r.emit, new AbortController().signal);
    await r.asleep;
    assert.equal(await r.runner.stopForShutdown(1_000), true);
    await assert.rejects(done, code("StepFailed"));
    assert.equal(r.journal.steps().install!.kind, "failed");
    assert.deepEqual(await h.runs(), ["install 3"]);
  } finally { await h.cleanup(); }
});

test("GoingDown: callers at the same moment share one probe; a yes is kept; no answer in time is a no", async () => {
  let calls = 0;
  let reply!: (v: boolean) => void;
  const g = new GoingDown(() => { calls++; return new Promise<boolean>((r) => { reply = r; }); }, 60_000, silentLogger());
  const a = g.ask();
  const b = g.ask();
  reply(true);
  assert.deepEqual(await Promise.all([a, b]), [true, true]);
  assert.equal(calls, 1);
  assert.equal(g.isKnown, true);
  assert.equal(await g.ask(), true);
  assert.equal(calls, 1);

  const silent = new GoingDown(() => new Promise<boolean>(() => {}), 50, silentLogger());
  assert.equal(await silent.ask(), false);
  assert.equal(silent.isKnown, false);
  const failing = new GoingDown(async () => { throw new Error("no systemctl"); }, 60_000, silentLogger());
  assert.equal(await failing.ask(), false);
});

test("the systemd probe: `stopping`, or a queued start of a shutdown target; anything else (or systemctl failing) is no", async () => {
  const fake = (state: string, jobs: string, fail = false): CommandRunner => async (argv) => {
    if (fail) throw new Error("systemctl: not found");
    return { code: argv[1] === "is-system-running" && state.trim() !== "running" ? 1 : 0, stdout: argv[1] === "is-system-running" ? state : jobs, stderr: "" };
  };
  assert.equal(await systemdGoingDown(fake("stopping\n", ""), 1000)(), true);
  assert.equal(await systemdGoingDown(fake("running\n", "   1 reboot.target start waiting\n 2 systemd-reboot.service start waiting\n"), 1000)(), true);
  assert.equal(await systemdGoingDown(fake("degraded\n", "7 poweroff.target start running\n"), 1000)(), true);
  assert.equal(await systemdGoingDown(fake("running\n", "9 apt-daily.service start running\n"), 1000)(), false);
  assert.equal(await systemdGoingDown(fake("degraded\n", ""), 1000)(), false);
  assert.equal(await systemdGoingDown(fake("", "", true), 1000)(), false);
  assert.equal(shutdownJobQueued("3 reboot.target stop waiting\n"), false);
  assert.equal(shutdownJobQueued("12 kexec.target start waiting"), true);
});

test("the local probe: a level is going down while its reboot's marker exists", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-going-down-"));
  try {
    const probe = localLevelGoingDown(dir);
    assert.equal(await probe(), false);
    await mkdir(levelPaths(dir).runDir, { recursive: true });
    await writeFile(levelPaths(dir).goingDown, "1\n");
    assert.equal(await probe(), true);
  } finally { await rm(dir, { recursive: true, force: true }); }
});
