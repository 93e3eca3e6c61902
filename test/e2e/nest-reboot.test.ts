// A level's own reboot inside configure, end to end on the local provider with
// real hsd processes: at l2 of `nest --depth 3` a step asks for a reboot (as
// homestak's PVE install does after its kernel); l2's hsd and everything it
// started die and hsd comes back from its boot unit; l2 resumes that step (not
// the ones before it), l1 re-attaches to l2's configure, and the operator's
// stream shows the reboot inside one configure. Then an unannounced kill of
// l2's hsd during configure is PeerGone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";
import { assertRebootInsideConfigure, assertStepResumedOnce, rebootTreeConfig, statusChain } from "../helpers/reboot-tree.js";

const { root, l0, env } = await e2eTree("hsd-reboot-");
const marks = join(root, "marks");
await mkdir(marks, { recursive: true });

// before: counts its runs. install: first run leaves a process behind (it must
// die with the reboot), records its pid and asks for a reboot; after the boot
// it checks that process is gone and finishes. after: counts its runs.
const INSTALL = [
  `if [ "$HSD_STEP_REBOOTS" = 0 ]; then`,
  `  echo "kernel installed"`,
  `  sleep 600 >/dev/null 2>&1 & echo $! > "${marks}/leftover.pid"`,
  `  echo $PPID > "${marks}/hsd-before.pid"`,
  `  echo "new kernel needs a reboot" > "$HSD_REBOOT_REQUEST"`,
  `  exit 0`,
  `fi`,
    // Dead, or a zombie nobody reaped yet (its parent is gone): state Z.
  `state=$(sed -n 's/^State:[[:space:]]*\\([A-Z]\\).*/\\1/p' "/proc/$(cat "${marks}/leftover.pid")/status" 2>/dev/null)`,
  `[ -n "$state" ] && [ "$state" != Z ] && { echo "leftover survived the reboot"; exit 9; }`,
  `echo "packages installed after reboot $HSD_STEP_REBOOTS"`,
  `echo $PPID > "${marks}/hsd-after.pid"`,
].join("\n");

await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), rebootTreeConfig(marks, INSTALL, 2));

/** Alive and not a zombie. */
const running = async (pid: number) => (/^State:\s+([A-Z])/m.exec(await readFile(`/proc/${pid}/status`, "utf8").catch(() => ""))?.[1] ?? "Z") !== "Z";

test("a step's reboot at l2 of nest --depth 3: l2 resumes that step after its hsd comes back, l1 re-attaches, the nest completes", async () => {
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 300_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-4000)}`);
  const ev = jsonLines(r.stdout);
  const ready = ev.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(ready, ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);

  // One configure of l2, with the reboot inside it; no phase of l2 ran twice.
  assertRebootInsideConfigure(ev, "l0/l1/l2", /install: new kernel needs a reboot/);
  // The step before ran once, the step after once, the install twice (before and after the boot), each in its own hsd.
  const { before } = await assertStepResumedOnce(marks, (await levelRoots(l0))[2]!, "l2");
  assert.ok(!(await running(before)), "the hsd from before the reboot still runs");

  // The tree is whole and l2 answers at the endpoint its parent pinned.
  assert.deepEqual(await statusChain(env), ["l0:ready", "l1:ready", "l2:ready", "l3:ready"]);
});

test("an unannounced kill of l2's hsd during configure is PeerGone", async () => {
  const r2 = await e2eTree("hsd-reboot-kill-", { HSD_FAULTS: "l2:configure:kill" });
  await mkdir(r2.l0, { recursive: true });
  await writeFile(join(r2.l0, "hsd.yaml"), "level: { name: l0 }\nssh: { host: 127.0.0.1, port: 0 }\n");
  const r = await hsctl(["nest", "--depth", "2", "--json"], r2.env, 180_000);
  assert.notEqual(r.code, 0, r.stdout.slice(-2000));
  const failed = jsonLines(r.stdout).filter((e) => e.kind === "failed" && e.level === "l0/l1/l2");
  assert.equal(failed.length, 1, r.stdout.slice(-2000));
  assert.equal(failed[0]!.phase, "configure");
  assert.equal(failed[0]!.failure.code, "PeerGone");
  assert.ok(!jsonLines(r.stdout).some((e) => e.kind === "rebooting"));
});
