// A configure step that reboots its level's machine itself, unannounced, as
// homestak's pve-config does (`systemctl reboot`, then sleep until killed),
// end to end on the local provider with real hsd processes: at l2 of
// `nest --depth 2` the step starts `hsd reboot-level` (the local stand-in for
// `systemctl reboot`: the level is marked going down, its hsd gets SIGTERM)
// and sleeps. l2's hsd, stopped while the machine goes down, journals the step
// as rebooting, tells l1, and exits; at its next start it runs that step again
// (not the one before it); l1 re-attaches and the nest finishes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { HSD, e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";
import { assertRebootInsideConfigure, assertStepResumedOnce, fileLines, rebootTreeConfig, statusChain } from "../helpers/reboot-tree.js";

const { root, l0, env } = await e2eTree("hsd-unannounced-reboot-");
const marks = join(root, "marks");
await mkdir(marks, { recursive: true });

// install: counts its runs; on the first it reboots the level ($HOMESTAK_ROOT
// is <level>/homestak) in a session of its own, as `systemctl reboot` would
// run outside the step, and waits to be killed; after the boot it finishes.
const INSTALL = [
  `echo "install $HSD_STEP_REBOOTS" >> "${marks}/install-$HSD_LEVEL_NAME"`,
  `if [ "$HSD_STEP_REBOOTS" = 0 ]; then`,
  `  echo "kernel installed"`,
  `  echo $PPID > "${marks}/hsd-before.pid"`,
  `  setsid ${JSON.stringify(process.execPath)} ${JSON.stringify(HSD)} reboot-level --root "$(dirname "$HOMESTAK_ROOT")" </dev/null >>"${marks}/reboot-level.log" 2>&1 &`,
  `  exec sleep 300`,
  `fi`,
  `echo "packages installed after reboot $HSD_STEP_REBOOTS"`,
  `echo $PPID > "${marks}/hsd-after.pid"`,
].join("\n");

await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), rebootTreeConfig(marks, INSTALL, 2));

test("a step that reboots l2 itself (unannounced) at nest --depth 2: l2's hsd journals it rebooting, l1 re-attaches, the step runs again once, the nest completes", async () => {
  const r = await hsctl(["nest", "--depth", "2", "--json"], env, 300_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-4000)}`);
  const ev = jsonLines(r.stdout);
  const ready = ev.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(ready, ["l0/l1", "l0/l1/l2"]);
  // One configure of l2 with the reboot inside it, naming the step and the system's reboot; no phase of l2 ran twice.
  assertRebootInsideConfigure(ev, "l0/l1/l2", /^step install: the system is rebooting/);

  // The step ran again once after the restart, in a new hsd; the one before it did not.
  assert.deepEqual(await fileLines(join(marks, "install-l2")), ["install 0", "install 1"]);
  const l2 = (await levelRoots(l0))[2]!;
  const { before, after } = await assertStepResumedOnce(marks, l2, "l2");
  // The new hsd has its unit's environment (what the old one was started with), not the step's that ran reboot-level.
  const environ = (await readFile(`/proc/${after}/environ`, "utf8")).split("\0");
  assert.ok(environ.includes("HSD_LEVEL_PATH=l0/l1/l2"), environ.join(" "));
  assert.ok(!environ.some((e) => /^(HSD_STEP|HOMESTAK_ROOT|HSD_REBOOT_REQUEST)=/.test(e)), environ.join(" "));
  // The old hsd stopped by itself, cleanly, after ending the step as the machine's reboot.
  const oldLog = (await fileLines(join(l2, "hsd.log"))).filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { pid: number; msg: string });
  const oldMsgs = oldLog.filter((l) => l.pid === before).map((l) => l.msg);
  assert.ok(oldMsgs.includes("the machine is going down while configure steps run: they end with its reboot"), oldMsgs.join("\n"));
  assert.ok(oldMsgs.includes("hsd stopped"), oldMsgs.join("\n"));
  assert.ok(!oldMsgs.includes("shutdown overran; exiting"));

  // The tree is whole and l2 answers at the endpoint its parent pinned.
  assert.deepEqual(await statusChain(env), ["l0:ready", "l1:ready", "l2:ready"]);
});
