// A reboot asked for during `hsctl sync --configure`, end to end on the local
// provider with real hsd processes: after `nest --depth 1`, l1's install step
// asks for a reboot when the steps are re-run by a sync. l1 announces it inside
// its configure and its hsd goes down; l0 waits for l1's hsd to come back with
// the same host key, re-attaches to the configure l1 resumed at boot, and the
// operator's sync shows one configure of l1 with the reboot inside it. A step
// that kills l1's hsd instead (no announcement) is PeerGone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";
import { fileLines, rebootTreeConfig, statusChain } from "../helpers/reboot-tree.js";

const { root, l0, env } = await e2eTree("hsd-sync-reboot-");
const marks = join(root, "marks");
await mkdir(marks, { recursive: true });

// install: nothing special in the nest; in a sync with marks/reboot present it asks for a reboot on its
// first run and finishes after it; with marks/kill present it kills its own hsd (no announcement).
const INSTALL = [
  `echo "install $HSD_STEP_REBOOTS" >> "${marks}/install-$HSD_LEVEL_NAME"`,
  `if [ -e "${marks}/kill" ]; then kill -9 $PPID; sleep 5; exit 1; fi`,
  `if [ -e "${marks}/reboot" ] && [ "$HSD_STEP_REBOOTS" = 0 ]; then`,
  `  echo $PPID > "${marks}/hsd-before.pid"`,
  `  echo "new kernel needs a reboot" > "$HSD_REBOOT_REQUEST"`,
  `  exit 0`,
  `fi`,
  `echo "packages installed after reboot $HSD_STEP_REBOOTS"`,
  `echo $PPID > "${marks}/hsd-after.pid"`,
].join("\n");

await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), rebootTreeConfig(marks, INSTALL, 1));

test("sync --configure: a step's reboot at l1 is waited for, l0 re-attaches to l1's resumed configure, and the sync completes", async () => {
  const n = await hsctl(["nest", "--depth", "1", "--json"], env, 180_000);
  assert.equal(n.code, 0, `nest failed: ${n.stderr}\n${n.stdout.slice(-3000)}`);
  await writeFile(join(marks, "reboot"), "");
  const r = await hsctl(["sync", "--configure", "--json"], env, 240_000);
  assert.equal(r.code, 0, `sync failed: ${r.stderr}\n${r.stdout.slice(-4000)}`);
  const ev = jsonLines(r.stdout);
  assert.ok(!ev.some((e) => e.kind === "failed"), ev.filter((e) => e.kind === "failed").map((e) => JSON.stringify(e)).join("\n"));
  const c = ev.filter((e) => e.level === "l0/l1" && e.phase === "configure");
  const kinds = c.map((e) => e.kind);
  assert.equal(kinds.filter((k) => k === "started").length, 1, kinds.join(","));
  assert.equal(kinds.filter((k) => k === "finished").length, 1, kinds.join(","));
  assert.equal(kinds.at(-1), "finished", c.map((e) => `${e.kind} ${e.message}`).join("\n"));
  const at = (re: RegExp, kind = "log") => c.findIndex((e) => e.kind === kind && re.test(e.message ?? ""));
  const order = [
    at(/^step install: new kernel needs a reboot$/, "rebooting"), at(/^l1 is rebooting; waiting for its hsd to come back$/),
    at(/^l1 is back after .* re-attaching to its configure$/), at(/^step install: resumed after reboot 1$/),
    at(/install\| packages installed after reboot 1/),
  ];
  assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!)), `out of order ${JSON.stringify(order)}:\n${c.map((e) => `${e.kind} ${e.message}`).join("\n")}`);
  // nest ran install once; the sync ran it fresh, then again after the reboot, in a new hsd; `after` ran once per configure.
  assert.deepEqual(await fileLines(join(marks, "install-l1")), ["install 0", "install 0", "install 1"]);
  assert.equal((await fileLines(join(marks, "after-l1"))).length, 2);
  assert.notEqual(await readFile(join(marks, "hsd-before.pid"), "utf8"), await readFile(join(marks, "hsd-after.pid"), "utf8"));
  const l1 = (await levelRoots(l0))[1]!;
  const journal = JSON.parse(await readFile(join(l1, "state", "journal.json"), "utf8"));
  assert.deepEqual([journal.steps.install.kind, journal.steps.install.reboots], ["finished", 1]);
  assert.deepEqual(await statusChain(env), ["l0:ready", "l1:ready"]);
});

test("sync --configure: a step that kills l1's hsd without announcing a reboot is PeerGone", async () => {
  await writeFile(join(marks, "kill"), "");
  const r = await hsctl(["sync", "--configure", "--json"], env, 120_000);
  const ev = jsonLines(r.stdout);
  const failed = ev.filter((e) => e.kind === "failed" && e.level === "l0/l1");
  assert.equal(failed.length, 1, r.stdout.slice(-3000));
  assert.equal(failed[0]!.failure.code, "PeerGone");
  assert.ok(!ev.some((e) => e.kind === "rebooting"), r.stdout.slice(-3000));
});
