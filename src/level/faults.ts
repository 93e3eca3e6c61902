// Test-only fault injection, off unless HSD_FAULTS names this level:
// "l2:sync:hold-once" makes level l2 hold at the start of its sync until the
// call is cancelled or the process dies, the first time only (a marker under
// state/ remembers). Reliability tests use it to land a kill inside a phase
// deterministically. Parsed by the daemon wiring; checked by level.ts.

import { access, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

export type FaultAction = "hold" | "hold-once";

export interface Faults {
  /** Resolves when no fault applies; otherwise applies it (may never resolve until aborted). */
  at(point: string, announce: (message: string) => void, signal: AbortSignal): Promise<void>;
}

export const NO_FAULTS: Faults = { at: async () => {} };

export function parseFaults(spec: string | undefined, levelName: string, stateDir: string): Faults {
  const rules = (spec ?? "").split(",").map((s) => s.trim().split(":")).filter((p) => p.length === 3 && p[0] === levelName);
  if (rules.length === 0) return NO_FAULTS;
  return {
    async at(point, announce, signal) {
      for (const [, p, action] of rules) {
        if (p !== point) continue;
        const marker = join(stateDir, `fault-${point}-fired`);
        if (action === "hold-once") {
          if (await access(marker).then(() => true, () => false)) continue;
          await mkdir(stateDir, { recursive: true, mode: 0o700 });
          await writeFile(marker, "");
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
