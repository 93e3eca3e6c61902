// configure, for a leaf (a manifest `type: vm` node): no hsd runs there, so
// this level runs its own configure steps against the leaf, as homestak pushes
// config-apply.yml over SSH from the PVE node above a VM. The leaf is ready
// when they finish; a step may ask for the leaf's reboot (../leaf-reboot.ts).
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";
import { configureLeafAcrossReboots } from "../leaf-reboot.js";

export const leafConfigurePhase: PhaseHook = {
  name: "configure",
  async run(r) {
    await configureLeafAcrossReboots({
      rec: r.rec, provider: r.provider, configureLeaf: r.configureLeaf, save: r.save, emit: r.emit, signal: r.signal, log: r.log, now: r.now, fresh: false,
    });
  },
};
