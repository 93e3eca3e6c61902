// preflight: this level's own checks (the images it serves) and the
// provider's host checks (with safe repairs) before a child is built.
// Imported by: src/nest/phases.

import { failedChecksError } from "../../domain/checks.js";
import type { PhaseHook } from "../phase-hook.js";

export const preflightPhase: PhaseHook = {
  name: "preflight",
  async run(r) {
    const checks = [...await r.levelChecks(), ...await r.provider.preflight({ signal: r.signal, log: r.log, emit: r.emit })];
    for (const c of checks) r.emit({ kind: "log", message: `${c.name}: ${c.result}${c.detail ? ` (${c.detail})` : ""}` });
    const err = failedChecksError(checks, "preflight failed");
    if (err) throw err;
  },
};
