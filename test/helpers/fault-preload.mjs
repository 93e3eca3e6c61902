// Test-only fault injection, loaded into an hsd with `node --import` (the test
// helpers add it to NODE_OPTIONS when a test sets HSD_FAULTS, so every level of
// a tree inherits it). It subscribes to the daemon's "hsd:checkpoint" channel
// (src/daemon/checkpoints.ts); the product itself carries no fault code.
//
// HSD_FAULTS is a comma list of level:point:action. "l2:sync:hold-once" makes
// level l2 hold at the start of its sync until the call is cancelled or the
// process dies, the first time only (a marker remembers); "l1:secrets-write:kill-once"
// SIGKILLs l1 between a secrets file's write and its rename.
// Points: startup (before readiness; the parent is in its install phase),
// identify, sync, secrets, configure, nest (start of each handler),
// journal-write, secrets-write (between fsync and rename of the file),
// demo-place-<repo> (level 0, before a demo checkout is placed behind its export).
// Actions: hold, hold-once, kill, kill-once, emit-<n>x<ms> (emit n log events,
// one every ms, then go on; a test-only event source for relay load),
// delay-<ms> (go on after ms: a slow step, not a stuck one).
// HSD_FAULTS_DIR (test-owned) keeps once-markers across a level's rebuild;
// default: the level's state/.
import { subscribe } from "node:diagnostics_channel";
import { access, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

const rules = (process.env.HSD_FAULTS ?? "").split(",").map((s) => s.trim().split(":")).filter((p) => p.length === 3);

async function once(level, stateDir, point) {
  const markerDir = process.env.HSD_FAULTS_DIR ? join(process.env.HSD_FAULTS_DIR, level) : stateDir;
  const marker = join(markerDir, `fault-${point}-fired`);
  if (await access(marker).then(() => true, () => false)) return false;
  await mkdir(markerDir, { recursive: true, mode: 0o700 });
  await writeFile(marker, "");
  return true;
}

async function apply(msg, mine) {
  const { point, level, stateDir, announce, signal } = msg;
  for (const [, , action] of mine) {
    const emit = /^emit-(\d+)x(\d+)$/.exec(action);
    if (emit) {
      const n = Number(emit[1]);
      const every = Number(emit[2]);
      const t0 = Date.now();
      for (let i = 0; i < n; i++) {
        // Paced against the start time, so timer drift does not lower the rate.
        const due = t0 + i * every - Date.now();
        if (due > 0) await new Promise((r) => setTimeout(r, due));
        if (signal.aborted) throw signal.reason;
        announce(`fault: event ${i + 1}/${n}`);
      }
      continue;
    }
    const delay = /^delay-(\d+)$/.exec(action);
    if (delay) {
      await new Promise((r) => setTimeout(r, Number(delay[1])));
      continue;
    }
    if (action === "kill" || action === "kill-once") {
      if (action === "kill-once" && !(await once(level, stateDir, point))) continue;
      process.kill(process.pid, "SIGKILL");
      await new Promise(() => {}); // the signal is delivered before anything else runs
    }
    if (action === "hold-once") {
      if (!(await once(level, stateDir, point))) continue;
    } else if (action !== "hold") continue;
    announce(`fault: holding at ${point}`);
    await new Promise((_, reject) => {
      if (signal.aborted) return reject(signal.reason);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }
}

if (rules.length > 0) {
  subscribe("hsd:checkpoint", (msg) => {
    const mine = rules.filter(([level, point]) => level === msg.level && point === msg.point);
    if (mine.length > 0) msg.hold(apply(msg, mine));
  });
}
