// A reboot a level's step asks for while the level has children, end to end on
// the local provider with real hsd processes: after `nest --depth 2`, l1's step
// asks for a reboot during `hsctl sync --configure`. Its reboot would stop l2
// (on PVE: its nested VM), so it is refused: l1's configure fails with
// RebootRefused and its hint, nothing reboots, l2 keeps running, and the wave
// goes on to l2.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";
import { hintFor } from "../../src/domain/hints.js";
import { fileLines, rebootTreeConfig, statusChain } from "../helpers/reboot-tree.js";

const { root, l0, env } = await e2eTree("hsd-reboot-refused-");
const marks = join(root, "marks");
await mkdir(marks, { recursive: true });

// install (at l1 only): asks for a reboot when marks/reboot exists.
const INSTALL = [
  `echo "install $HSD_STEP_REBOOTS" >> "${marks}/install-$HSD_LEVEL_NAME"`,
  `[ -e "${marks}/reboot" ] && echo "new kernel needs a reboot" > "$HSD_REBOOT_REQUEST"`,
  `exit 0`,
].join("\n");
await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), rebootTreeConfig(marks, INSTALL, 1));

const pidOf = async (dir: string) => (JSON.parse(await readFile(join(dir, "run", "ready.json"), "utf8")) as { pid: number }).pid;

test("a step's reboot at a level with children is refused (RebootRefused): nothing reboots, the children keep running", async () => {
  const n = await hsctl(["nest", "--depth", "2", "--json"], env, 180_000);
  assert.equal(n.code, 0, `nest failed: ${n.stderr}\n${n.stdout.slice(-3000)}`);
  const [, l1, l2] = await levelRoots(l0);
  const before = [await pidOf(l1!), await pidOf(l2!)];
  await writeFile(join(marks, "reboot"), "");
  const r = await hsctl(["sync", "--configure", "--json"], env, 180_000);
  const ev = jsonLines(r.stdout);
  const failed = ev.filter((e) => e.kind === "failed");
  assert.deepEqual(failed.map((e) => `${e.level} ${e.phase} ${e.failure.code}`), ["l0/l1 configure RebootRefused"], r.stdout.slice(-3000));
  assert.match(failed[0]!.failure.message, /step install of l0\/l1 asked for a reboot, refused: it would stop the level below it \(l2\)/);
  assert.equal(failed[0]!.failure.hint, hintFor("RebootRefused"));
  assert.ok(!ev.some((e) => e.kind === "rebooting"), "a refused reboot is not announced");
  // The wave went on below l1: l2 re-ran its steps.
  assert.ok(ev.some((e) => e.level === "l0/l1/l2" && e.phase === "configure" && e.kind === "finished"));
  // Nothing rebooted: the same hsd at each level, the step ran once more at l1 and did not resume.
  assert.deepEqual([await pidOf(l1!), await pidOf(l2!)], before);
  assert.deepEqual(await fileLines(join(marks, "install-l1")), ["install 0", "install 0"]);
  const journal = JSON.parse(await readFile(join(l1!, "state", "journal.json"), "utf8"));
  assert.equal(journal.steps.install.kind, "failed");
  assert.deepEqual(await statusChain(env), ["l0:ready", "l1:ready", "l2:ready"]);
});
