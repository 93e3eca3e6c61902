// Configure steps end to end, real hsd processes at every level: a step that
// fails at l2 fails the nest as StepFailed naming the level, step, exit code
// and last lines; a re-run skips l1's configure and l2's finished steps; then
// an edited playbook at level 0 reaches every level's step with one
// `hsctl sync --configure`, and no secrets file changes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";

const { root, l0, env } = await e2eTree("hsd-steps-");
const okMarker = join(root, "l2-may-pass");

await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), `level: { name: l0 }
ssh: { host: 127.0.0.1, port: 0 }
configure:
  steps:
    - name: pve-config
      run: [./run.sh, scenario, run, pve-config, --local, --dry-run]
      cwd: iac-driver
    - name: flaky
      run: [sh, -c, 'echo "flaky at $HSD_LEVEL_NAME"; test -e "${okMarker}" || exit 7']
      when: { min_depth: 2, max_depth: 2 }
`);

const fileHash = async (p: string) => createHash("sha256").update(await readFile(p)).digest("hex");

test("a step failing at l2 fails the nest with StepFailed naming l0/l1/l2, the step, its exit code and last lines", async () => {
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 180_000);
  assert.equal(r.code, 1, r.stderr);
  const failed = jsonLines(r.stdout).filter((e) => e.kind === "failed" && e.phase === "configure");
  assert.deepEqual(failed.map((e) => e.level), ["l0/l1/l2"]);
  const f = failed[0]!.failure;
  assert.equal(f.code, "StepFailed");
  // The failure names the step, its exit code and its last output line (the contract for operators).
  assert.ok(f.message.includes("flaky") && f.message.includes("exited 7") && f.message.includes("flaky at l2"), f.message);
  assert.match(r.stderr, /failed at l0\/l1\/l2 in phase configure/);
  const l2 = (await levelRoots(l0))[2]!;
  const steps = JSON.parse(await readFile(join(l2, "state", "journal.json"), "utf8")).steps;
  assert.equal(steps["pve-config"].kind, "finished");
  assert.equal(steps.flaky.kind, "failed");
});

test("the re-run skips l1's configure and l2's finished step, re-runs the failed one, and completes", async () => {
  await mkdir(okMarker);
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 180_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
  const ev = jsonLines(r.stdout);
  const configure = (level: string) => ev.filter((e) => e.level === level && e.phase === "configure");
  assert.ok(configure("l0/l1").some((e) => e.kind === "skipped"), "l1's configure ran again");
  const l2 = configure("l0/l1/l2").map((e) => e.message ?? "");
  assert.ok(l2.some((m) => m === "step pve-config: finished in an earlier run, skipped"), l2.join("\n"));
  assert.ok(!l2.some((m) => m.startsWith("step pve-config: ./run.sh")), "pve-config ran again at l2");
  assert.ok(l2.some((m) => m.startsWith("step flaky: finished")), l2.join("\n"));
  assert.ok(configure("l0/l1/l2/l3").some((e) => /pve-config\| layout: root=/.test(e.message ?? "")), "l3 ran its steps");
});

test("an edited playbook at level 0 reaches every level's step with sync --configure; secrets files stay byte-identical", async () => {
  const roots = (await levelRoots(l0)).slice(1);
  const watched = roots.flatMap((lr) => [join(lr, "homestak", "config", "secrets.yaml"), join(lr, "homestak", "config", "site.yaml"), join(lr, "secrets.yaml")]);
  const before = await Promise.all(watched.map(fileHash));
  const playbook = join(l0, "demo", "ansible", "playbooks", "pve-setup.yml");
  await writeFile(playbook, (await readFile(playbook, "utf8")).replace("# version: 1", "# version: 2-edited"));

  const r = await hsctl(["sync", "--configure", "--json"], env, 120_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
  const seen = jsonLines(r.stdout)
    .filter((e) => e.phase === "configure" && /playbook pve-setup\.yml: version 2-edited/.test(e.message ?? ""))
    .map((e) => e.level).sort();
  assert.deepEqual(seen, ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);
  assert.deepEqual(await Promise.all(watched.map(fileHash)), before);
});
