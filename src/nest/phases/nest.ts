// nest: ask the child to build the remaining depth below itself and relay every
// event it streams, prefixed with this level's name.
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";

export const nestPhase: PhaseHook = {
  name: "nest",
  async run(r) {
    const below = r.request.depth - 1;
    if (below <= 0) {
      r.emit({ kind: "log", message: "leaf level: nothing to build below" });
      return;
    }
    const link = await r.link();
    await link.nest({ ...r.request, depth: below }, r.relay, r.signal);
  },
};
