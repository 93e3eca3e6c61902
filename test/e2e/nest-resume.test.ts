// Resume: SIGKILL the level-2 hsd while it is in its sync phase. The build
// must fail promptly, naming level 2 and the phase, with the error that the
// connection dropped (PeerGone), not a timeout; a second nest completes and
// reports the earlier phases as skipped. HSD_FAULTS holds l2's sync once so
// the kill lands inside the phase deterministically.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines } from "../helpers/hsctl.js";

const { l0, env } = await e2eTree("hsd-resume-", { HSD_FAULTS: "l2:sync:hold-once" });

test("killing level 2 in its sync phase fails the build with PeerGone; a re-run resumes and completes", async () => {
  let killedPid = 0;
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 120_000, (line) => {
    if (killedPid || !line.startsWith("{")) return;
    const ev = JSON.parse(line);
    // l2 answers "holding" once its sync has started; kill it there.
    if (ev.level === "l0/l1/l2" && ev.phase === "sync" && ev.kind === "log" && /fault: holding/.test(ev.message ?? "")) {
      void readFile(join(l0, "state/levels/l1/state/levels/l2/run/ready.json"), "utf8").then((t) => {
        killedPid = JSON.parse(t).pid;
        process.kill(killedPid, "SIGKILL");
      });
    }
  });
  assert.ok(killedPid > 0, `never saw l2 in its sync phase:\n${r.stdout.slice(-2000)}`);
  assert.notEqual(r.code, 0);
  const failed = jsonLines(r.stdout).filter((e) => e.kind === "failed");
  const deepest = failed.sort((a, b) => b.levelPath.length - a.levelPath.length)[0];
  assert.equal(deepest?.level, "l0/l1/l2");
  assert.equal(deepest?.phase, "sync");
  assert.equal(deepest?.failure?.code, "PeerGone");
  assert.match(r.stderr, /l0\/l1\/l2/);

  const again = await hsctl(["nest", "--depth", "3", "--json"], env, 120_000);
  assert.equal(again.code, 0, again.stderr + again.stdout.slice(-2000));
  const ev = jsonLines(again.stdout);
  const skipped = (lvl: string) => ev.filter((e) => e.level === lvl && e.kind === "skipped").map((e) => e.phase);
  assert.deepEqual(skipped("l0/l1"), ["preflight", "provision", "boot", "install", "handshake", "sync", "secrets", "configure"]);
  assert.deepEqual(skipped("l0/l1/l2"), ["preflight", "provision", "boot"]);
  const ready = ev.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(ready, ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);
});
