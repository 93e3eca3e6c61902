// Test-only fault injection, off unless HSD_FAULTS names this level:
// "l2:sync:hold-once" makes level l2 hold at the start of its sync until the
// call is cancelled or the process dies, the first time only (a marker under
// state/ remembers); "l1:secrets-write:kill-once" SIGKILLs l1 between a secrets
// file's write and its rename. Reliability tests use it to land a kill inside a
// phase or a write deterministically. Parsed once by the daemon wiring from its
// injected env; reaches the level only as its `checkpoint` hook and the stores
// only as their beforeRename hook, so no other layer knows faults exist.
//
// Points: startup (before readiness; the parent is in its install phase),
// identify, sync, secrets, configure, nest (start of each handler),
// journal-write, secrets-write (between fsync and rename of the file).
// Actions: hold, hold-once, kill, kill-once, emit-<n>x<ms> (emit n log events,
// one every ms, then go on; a test-only event source for relay load).
// Imported by: src/daemon.

import { access, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

export type FaultAction = "hold" | "hold-once" | "kill" | "kill-once" | `emit-${number}x${number}`;

export interface Faults {
  /** Resolves when no fault applies; otherwise applies it (may never resolve until aborted). */
  at(point: string, announce: (message: string) => void, signal: AbortSignal): Promise<void>;
  /** True when some rule names `point` (lets callers skip wiring a hook). */
  has(point: string): boolean;
}

export const NO_FAULTS: Faults = { at: async () => {}, has: () => false };

const NEVER = new AbortController().signal;

/** A beforeRename hook for writeFileAtomic that applies `point` (kill actions). */
export function writeFault(faults: Faults, point: string): ((tmp: string) => Promise<void>) | undefined {
  if (!faults.has(point)) return undefined;
  return (tmp) => faults.at(point, () => { void tmp; }, NEVER);
}

export function parseFaults(env: NodeJS.ProcessEnv, levelName: string, stateDir: string): Faults {
  const rules = (env.HSD_FAULTS ?? "").split(",").map((s) => s.trim().split(":")).filter((p) => p.length === 3 && p[0] === levelName);
  if (rules.length === 0) return NO_FAULTS;
  // HSD_FAULTS_DIR (test-owned) keeps once-markers across a level's rebuild; default: the level's state/.
  const markerDir = env.HSD_FAULTS_DIR ? join(env.HSD_FAULTS_DIR, levelName) : stateDir;
  const once = async (point: string): Promise<boolean> => {
    const marker = join(markerDir, `fault-${point}-fired`);
    if (await access(marker).then(() => true, () => false)) return false;
    await mkdir(markerDir, { recursive: true, mode: 0o700 });
    await writeFile(marker, "");
    return true;
  };
  return {
    has: (point) => rules.some(([, p]) => p === point),
    async at(point, announce, signal) {
      for (const [, p, action] of rules) {
        if (p !== point) continue;
        const emit = /^emit-(\d+)x(\d+)$/.exec(action!);
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
        if (action === "kill" || action === "kill-once") {
          if (action === "kill-once" && !(await once(point))) continue;
          process.kill(process.pid, "SIGKILL");
          await new Promise(() => {}); // the signal is delivered before anything else runs
        }
        if (action === "hold-once") {
          if (!(await once(point))) continue;
        } else if (action !== "hold") continue;
        announce(`fault: holding at ${point}`);
        await new Promise<void>((_, reject) => {
          if (signal.aborted) return reject(signal.reason);
          signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        });
      }
    },
  };
}
