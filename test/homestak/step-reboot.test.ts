// The reboot protocol of configure steps, with real processes and a real
// journal: a step that writes $HSD_REBOOT_REQUEST and exits 0 is journaled as
// rebooting (the steps after it wait), the next run resumes that step with
// HSD_STEP_REBOOTS=1 and skips the ones before; a failing step's request is
// void; a step that asks past the limit fails as StepFailed; a level that
// cannot reboot offers no request file; a step run as another user asks through
// a file of its own, and a symlink there is never followed.

import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, mkdir, readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load-config.js";
import { homestakLayout } from "../../src/homestak/layout.js";
import { StepRunner, rebootPendingIn, stepBaseEnv } from "../../src/homestak/step-runner.js";
import { MAX_REBOOTS_PER_STEP } from "../../src/homestak/step-reboot.js";
import { Journal } from "../../src/nest/journal.js";
import { silentLogger } from "../../src/log/logger.js";
import { HsError } from "../../src/domain/errors.js";

const PARENT = "parent: { host: 10.0.0.1, port: 2200, host_key_fingerprint: \"SHA256:abc\" }\nlevel: { name: l2, depth: 2 }\n";

async function harness(stepsYaml: (dir: string) => string, canReboot = true, rebootBlocked?: () => string | undefined) {
  const dir = await mkdtemp(join(tmpdir(), "hsd-step-reboot-"));
  const config = parseConfig(`${PARENT}${stepsYaml(dir)}`, "hsd.yaml", { root: dir });
  const layout = homestakLayout(config);
  await mkdir(layout.root, { recursive: true });
  const journalPath = join(dir, "journal.json");
  const runner = async () => {
    // A fresh journal object per run, as after a boot: only what was persisted counts.
    const journal = new Journal(journalPath);
    await journal.load();
    return {
      journal,
      runner: new StepRunner({
        config, layout, journal, log: silentLogger(), levelPath: ["l0", "l1", "l2"], now: () => Date.now(),
        baseEnv: stepBaseEnv({ PATH: process.env.PATH }), killGraceMs: 200,
        ...(canReboot ? { rebootRequestPath: join(dir, "reboot-request") } : {}),
        ...(rebootBlocked ? { rebootBlocked } : {}),
      }),
    };
  };
  const events: { kind: string; message: string }[] = [];
  return { dir, runner, events, emit: (ev: { kind: string; message: string }) => { events.push(ev); }, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

const count = async (p: string) => (await readFile(p, "utf8").catch(() => "")).split("\n").filter(Boolean);

test("a step's reboot request is journaled as rebooting; the next run resumes that step (HSD_STEP_REBOOTS=1), not the ones before", async () => {
  const h = await harness((d) => `configure:
  steps:
    - name: a
      run: [sh, -c, 'echo a >> ${d}/runs']
    - name: install
      run: [sh, -c, 'echo "install $HSD_STEP_REBOOTS" >> ${d}/runs; [ "$HSD_STEP_REBOOTS" = 0 ] && echo "new kernel" > "$HSD_REBOOT_REQUEST"; exit 0']
    - name: b
      run: [sh, -c, 'echo b >> ${d}/runs']
`);
  try {
    const first = await h.runner();
    const out = await first.runner.run({ fresh: false }, h.emit, new AbortController().signal);
    assert.deepEqual(out.reboot, { step: "install", reason: "new kernel", reboots: 1 });
    assert.deepEqual(await count(join(h.dir, "runs")), ["a", "install 0"]);
    const rec = first.journal.steps().install!;
    assert.equal(rec.kind, "rebooting");
    assert.equal(rec.reboots, 1);
    assert.equal(rec.reason, "new kernel");
    assert.ok(rebootPendingIn(first.journal.steps()));
    assert.ok(h.events.some((e) => e.kind === "rebooting" && e.message === "step install: new kernel"));
    assert.ok(!existsSync(join(h.dir, "reboot-request")), "the request file was left behind");

    const second = await h.runner();
    assert.deepEqual(await second.runner.run({ fresh: false }, h.emit, new AbortController().signal), {});
    assert.deepEqual(await count(join(h.dir, "runs")), ["a", "install 0", "install 1", "b"]);
    assert.equal(second.journal.steps().install!.kind, "finished");
    assert.equal(second.journal.steps().install!.reboots, 1);
    assert.ok(!rebootPendingIn(second.journal.steps()));
  } finally { await h.cleanup(); }
});

test("a failing step's request is void; a step asking past the limit fails as StepFailed; a level that cannot reboot offers no request file", async () => {
  const h = await harness(() => `configure:
  steps:
    - name: bad
      run: [sh, -c, 'echo x > "$HSD_REBOOT_REQUEST"; exit 3']
`);
  try {
    const r = await h.runner();
    await assert.rejects(r.runner.run({ fresh: false }, h.emit, new AbortController().signal), (e: unknown) => e instanceof HsError && e.code === "StepFailed");
    assert.equal(r.journal.steps().bad!.kind, "failed");
    assert.ok(!existsSync(join(h.dir, "reboot-request")));
  } finally { await h.cleanup(); }

  const loop = await harness(() => `configure:
  steps:
    - name: loop
      run: [sh, -c, 'echo again > "$HSD_REBOOT_REQUEST"']
`);
  try {
    for (let i = 1; i <= MAX_REBOOTS_PER_STEP; i++) {
      const r = await loop.runner();
      assert.equal((await r.runner.run({ fresh: false }, loop.emit, new AbortController().signal)).reboot?.reboots, i);
    }
    const r = await loop.runner();
    await assert.rejects(r.runner.run({ fresh: false }, loop.emit, new AbortController().signal), (e: unknown) => e instanceof HsError && e.code === "StepFailed");
  } finally { await loop.cleanup(); }

  const none = await harness((d) => `configure:
  steps:
    - name: ask
      run: [sh, -c, 'echo "[\${HSD_REBOOT_REQUEST:-unset}]" > ${d}/seen']
`, false);
  try {
    const r = await none.runner();
    assert.deepEqual(await r.runner.run({ fresh: false }, none.emit, new AbortController().signal), {});
    assert.equal((await readFile(join(none.dir, "seen"), "utf8")).trim(), "[unset]");
  } finally { await none.cleanup(); }
});

test("a step run as another user asks through a file of its own; a symlink put there is not followed", async () => {
  const h = await harness((d) => `configure:
  steps:
    - name: as-nobody
      run: [sh, -c, 'id -un > ${d}/who; echo "from nobody" > "$HSD_REBOOT_REQUEST"']
      user: nobody
`);
  try {
    await chmod(h.dir, 0o777); // the step's cwd and its mark, reachable by nobody
    const r = await h.runner();
    const out = await r.runner.run({ fresh: false }, h.emit, new AbortController().signal);
    assert.equal((await readFile(join(h.dir, "who"), "utf8")).trim(), "nobody");
    assert.deepEqual(out.reboot, { step: "as-nobody", reason: "from nobody", reboots: 1 });
  } finally { await h.cleanup(); }

  const link = await harness(() => `configure:
  steps:
    - name: sneaky
      run: [sh, -c, 'ln -s /etc/passwd "$HSD_REBOOT_REQUEST"']
      user: nobody
`);
  try {
    await chmod(link.dir, 0o777);
    const r = await link.runner();
    const out = await r.runner.run({ fresh: false }, link.emit, new AbortController().signal);
    // Still a request (the step made the name), but nothing of the file it points at.
    assert.equal(out.reboot?.reason, "reboot requested");
  } finally { await link.cleanup(); }
});

test("a request while the level may not reboot (children below it) is RebootRefused: journaled failed, not announced, the request void, nothing after it runs", async () => {
  const h = await harness((d) => `configure:
  steps:
    - name: install
      run: [sh, -c, 'echo "install $HSD_STEP_REBOOTS" >> ${d}/runs; echo "new kernel" > "$HSD_REBOOT_REQUEST"']
    - name: b
      run: [sh, -c, 'echo b >> ${d}/runs']
`, true, () => "it would stop the level below it (l3)");
  try {
    const { runner, journal } = await h.runner();
    const err = await runner.run({ fresh: false }, h.emit, new AbortController().signal).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof HsError && err.code === "RebootRefused", String(err));
    assert.deepEqual([err.details.step, err.details.lastLines], ["install", ["new kernel"]]);
    assert.equal(journal.steps().install!.kind, "failed");
    assert.ok(!h.events.some((e) => e.kind === "rebooting"));
    assert.equal(existsSync(join(h.dir, "reboot-request")), false);
    assert.deepEqual(await count(join(h.dir, "runs")), ["install 0"]);
  } finally {
    await h.cleanup();
  }
});
