// configure: the child configures itself from its synced repos.
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";

export const configurePhase: PhaseHook = {
  name: "configure",
  async run(r) {
    const link = await r.link();
    await link.configure((ev) => r.relay(ev), r.signal);
  },
};
