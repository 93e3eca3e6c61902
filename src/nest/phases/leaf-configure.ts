// configure, for a leaf (a manifest `type: vm` node): no hsd runs there, so
// this level runs its own configure steps against the leaf, as homestak pushes
// config-apply.yml over SSH from the PVE node above a VM. The leaf is ready
// when they finish.
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";

export const leafConfigurePhase: PhaseHook = {
  name: "configure",
  async run(r) {
    await r.configureLeaf({
      name: r.rec.name, address: r.rec.address ?? "", spec: r.rec.node?.spec ?? "", manifest: r.rec.manifest ?? "",
      handle: r.rec.handle!,
    }, (ev) => r.emit(ev), r.signal);
  },
};
