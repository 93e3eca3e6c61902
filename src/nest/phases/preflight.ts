// preflight: this level's own checks (the images it serves) and the
// provider's host checks (with safe repairs) before a child is built.
// Imported by: src/nest/phases.

import { failedChecksError } from "../../domain/checks.js";
import type { PhaseHook } from "../phase-hook.js";

export const preflightPhase: PhaseHook = {
  name: "preflight",
  redoable: true,
  async run(r) {
    // Side by side (the images' first hash is file work, the provider's checks mostly wait on its
    // API and host commands); reported as before, the level's own first.
    const [own, provider] = await Promise.all([r.levelChecks(), r.provider.preflight({ signal: r.signal, log: r.log, emit: r.emit })]);
    const checks = [...own, ...provider];
    for (const c of checks) r.emit({ kind: "log", message: `${c.name}: ${c.result}${c.detail ? ` (${c.detail})` : ""}` });
    const err = failedChecksError(checks, "preflight failed");
    if (err) throw err;
  },
};
