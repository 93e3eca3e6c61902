// A level's machine going down outside a configure step, end to end on the
// local provider with real hsd processes: l1 holds at the start of its
// configure (a test checkpoint, standing in for its provider's set-up) and is
// rebooted meanwhile (`hsd reboot-level`, the local stand-in for the machine's
// reboot). l0 hears LevelWentDown, not Cancelled, and a re-run completes. The
// same hold ended by a plain stop of l1's hsd (systemctl stop hsd, the machine
// staying up) is still Cancelled.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { HSD, e2eTree, hsctl, jsonLines } from "../helpers/hsctl.js";
import { hintFor } from "../../src/domain/hints.js";

async function tree(prefix: string) {
  const t = await e2eTree(prefix, { HSD_FAULTS: "l1:configure:hold-once" });
  await mkdir(t.l0, { recursive: true });
  await writeFile(join(t.l0, "hsd.yaml"), "level: { name: l0 }\nssh: { host: 127.0.0.1, port: 0 }\n");
  return { ...t, l1: join(t.l0, "state", "levels", "l1") };
}

/** Runs `nest --depth 1` and calls `atHold` once l1 says it holds in its configure. */
async function nestHeld(env: Record<string, string>, atHold: () => void) {
  let held = false;
  const r = await hsctl(["nest", "--depth", "1", "--json"], env, 180_000, (line) => {
    if (held || !line.startsWith("{")) return;
    const ev = JSON.parse(line);
    if (ev.level === "l0/l1" && ev.phase === "configure" && ev.message === "fault: holding at configure") {
      held = true;
      atHold();
    }
  });
  assert.ok(held, `l1 never held in its configure:\n${r.stdout.slice(-2000)}`);
  return r;
}

const readyPidSync = (dir: string) => (JSON.parse(readFileSync(join(dir, "run", "ready.json"), "utf8")) as { pid: number }).pid;

/** Resolves once the level's hsd has started again: a ready.json naming a new, live pid. */
async function backUp(dir: string, oldPid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    let pid: number | undefined;
    try { pid = readyPidSync(dir); } catch { /* between boots: no ready.json yet */ }
    if (pid !== undefined && pid !== oldPid) {
      try { process.kill(pid, 0); return; } catch { /* not this one */ }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the level's hsd did not start again within ${ms} ms`);
}

/** A promise's value, or a rejection once `ms` pass (every wait has a bound). */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, rej) => { timer = setTimeout(() => rej(new Error(`no result in ${ms} ms`)), ms); })]).finally(() => clearTimeout(timer));
}

const configureFailure = (stdout: string) => {
  const failed = jsonLines(stdout).filter((e) => e.kind === "failed" && e.level === "l0/l1");
  assert.equal(failed.length, 1, stdout.slice(-2000));
  assert.equal(failed[0]!.phase, "configure");
  return failed[0]!.failure as { code: string; hint?: string };
};

test("l1's machine reboots while its configure is outside a step: l0 hears LevelWentDown with its hint, and a re-run completes", async () => {
  const { env, l1 } = await tree("hsd-went-down-");
  let rebooted: Promise<number | null> | undefined;
  let oldPid: number | undefined;
  const r = await nestHeld(env, () => {
    oldPid = readyPidSync(l1);
    const p = spawn(process.execPath, [HSD, "reboot-level", "--root", l1], { stdio: "ignore", detached: true });
    rebooted = new Promise((res) => p.once("exit", (code) => res(code)));
  });
  assert.notEqual(r.code, 0);
  const failure = configureFailure(r.stdout);
  assert.equal(failure.code, "LevelWentDown", JSON.stringify(failure));
  assert.equal(failure.hint, hintFor("LevelWentDown"));
  assert.ok(!jsonLines(r.stdout).some((e) => e.kind === "rebooting"), "no step was running: nothing to announce");
  // The re-run comes once l1 is back from its reboot (reboot-level has started
  // its hsd again): the operator's re-run, not a race with the machine's boot.
  assert.equal(await withTimeout(rebooted!, 60_000), 0, "hsd reboot-level failed");
  await backUp(l1, oldPid!, 60_000);
  // l1 came back from its reboot; the re-run skips what finished and completes its configure.
  const again = await hsctl(["nest", "--depth", "1", "--json"], env, 180_000);
  assert.equal(again.code, 0, `${again.stderr}\n${again.stdout.slice(-3000)}`);
  const ev = jsonLines(again.stdout);
  assert.deepEqual(ev.filter((e) => e.level === "l0/l1" && e.kind === "finished").map((e) => e.phase), ["configure", "nest"]);
});

test("the same hold ended by a plain stop of l1's hsd (the machine staying up) is still Cancelled", async () => {
  const { env, l1 } = await tree("hsd-went-down-stop-");
  const r = await nestHeld(env, () => {
    void readFile(join(l1, "run", "ready.json"), "utf8").then((t) => process.kill((JSON.parse(t) as { pid: number }).pid, "SIGTERM"));
  });
  assert.notEqual(r.code, 0);
  assert.equal(configureFailure(r.stdout).code, "Cancelled");
});
