// provision: the provider creates the child machine (not yet started).
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";

export const provisionPhase: PhaseHook = {
  name: "provision",
  async run(r) {
    r.rec.handle = await r.provider.provision(r.rec.name, r.self.depth + 1, { signal: r.signal, log: r.log, emit: r.emit }, r.rec.node);
  },
};
