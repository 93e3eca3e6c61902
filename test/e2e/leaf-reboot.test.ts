// A leaf's reboot inside its configure, end to end on the local provider with
// real hsd processes: `hsctl nest -M` builds root (a level) and edge (a
// `type: vm` leaf, no hsd); root runs its configure steps against edge, and
// one of them asks for edge's reboot (a kernel its playbook installed). root
// journals the step as rebooting in edge's record, says so in edge's
// configure, reboots edge through its provider, runs that step again (not the
// one before it), and the operator sees one configure with the reboot in it.
// `hsctl sync --configure` runs the steps afresh: the same again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines } from "../helpers/hsctl.js";
import { fileLines, rebootTreeConfig } from "../helpers/reboot-tree.js";

const { root, l0, env } = await e2eTree("hsd-leaf-reboot-");
const marks = join(root, "marks");
await mkdir(marks, { recursive: true });

// kernel: against a leaf only; on its first run it asks for the leaf's reboot, after it it finishes.
const KERNEL = [
  `[ "$HSD_LEAF" = 1 ] || exit 0`,
  `echo "leaf $HSD_STEP_REBOOTS" >> "${marks}/kernel-$HSD_LEVEL_NAME"`,
  `if [ "$HSD_STEP_REBOOTS" = 0 ]; then`,
  `  echo "kernel installed on $HSD_TARGET"`,
  `  echo "boot the new kernel" > "$HSD_REBOOT_REQUEST"`,
  `  exit 0`,
  `fi`,
  `echo "running the new kernel after reboot $HSD_STEP_REBOOTS"`,
].join("\n");

await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), rebootTreeConfig(marks, KERNEL, null, "kernel"));
const manifest = join(root, "leafy.yaml");
await writeFile(manifest, [
  "schema_version: 2", "name: leafy", "nodes:",
  "  - { name: root, type: pve, spec: pve, preset: vm-small, image: pve-9 }",
  "  - { name: edge, type: vm, spec: base, preset: vm-small, image: debian-12, parent: root }", "",
].join("\n"));

const EDGE = "l0/root/edge";

/** edge's configure in a stream: started once, one rebooting naming the step, root's wait and resume after it, the resumed output, finished last. */
function assertLeafRebootInsideConfigure(ev: Record<string, any>[]): void {
  assert.ok(!ev.some((e) => e.kind === "failed"), ev.filter((e) => e.kind === "failed").map((e) => JSON.stringify(e)).join("\n"));
  const c = ev.filter((e) => e.level === EDGE && e.phase === "configure");
  const kinds = c.map((e) => e.kind);
  assert.equal(kinds.filter((k) => k === "started").length, 1, kinds.join(","));
  const reboots = c.filter((e) => e.kind === "rebooting");
  assert.equal(reboots.length, 1, kinds.join(","));
  assert.match(reboots[0]!.message, /^step kernel: boot the new kernel$/);
  const at = (re: RegExp) => c.findIndex((e) => re.test(e.message ?? ""));
  const order = [
    at(/kernel\| kernel installed on 127\.0\.0\.1/), kinds.indexOf("rebooting"), at(/^edge is rebooting; waiting for it to come back$/),
    at(/^edge is back after \d+ s at 127\.0\.0\.1; resuming its configure$/), at(/^step kernel: resumed after reboot 1$/),
    at(/kernel\| running the new kernel after reboot 1/),
  ];
  assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!)), `out of order ${JSON.stringify(order)}:\n${c.map((e) => `${e.kind} ${e.message}`).join("\n")}`);
  assert.equal(kinds.at(-1), "finished");
}

test("a leaf's step asks for the leaf's reboot: its parent journals it, reboots the leaf, resumes that step, and the configure is one", async () => {
  const r = await hsctl(["nest", "--manifest", manifest, "--json"], env, 240_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-4000)}`);
  const ev = jsonLines(r.stdout);
  assertLeafRebootInsideConfigure(ev);
  assert.deepEqual(ev.filter((e) => e.level === EDGE && e.kind === "started").map((e) => e.phase), ["preflight", "provision", "boot", "configure"]);
  // The step ran twice (before and after the reboot); the steps around it once.
  assert.deepEqual(await fileLines(join(marks, "kernel-edge")), ["leaf 0", "leaf 1"]);
  assert.equal((await fileLines(join(marks, "before-edge"))).length, 1);
  assert.equal((await fileLines(join(marks, "after-edge"))).length, 1);
  // The leaf's step records are its record in root's journal: the reboot counted, every step finished.
  const journal = JSON.parse(await readFile(join(l0, "state", "levels", "root", "state", "journal.json"), "utf8"));
  const steps = journal.children.edge.steps;
  assert.deepEqual([steps.before.kind, steps.kernel.kind, steps.kernel.reboots, steps.after.kind], ["finished", "finished", 1, "finished"]);
  assert.equal(journal.children.edge.state, "ready");
});

test("sync --configure runs the leaf's steps afresh: the reboot again, inside one configure", async () => {
  const r = await hsctl(["sync", "--configure", "--json"], env, 240_000);
  assert.equal(r.code, 0, `sync failed: ${r.stderr}\n${r.stdout.slice(-4000)}`);
  assertLeafRebootInsideConfigure(jsonLines(r.stdout));
  assert.deepEqual(await fileLines(join(marks, "kernel-edge")), ["leaf 0", "leaf 1", "leaf 0", "leaf 1"]);
  assert.equal((await fileLines(join(marks, "before-edge"))).length, 2);
});
