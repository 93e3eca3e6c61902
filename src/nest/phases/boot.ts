// boot: start the child machine and wait until it has a routable address.
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";

export const bootPhase: PhaseHook = {
  name: "boot",
  redoable: true,
  async run(r) {
    const booted = await r.provider.boot(r.rec.handle!, { signal: r.signal, log: r.log, emit: r.emit });
    r.rec.handle = { name: booted.name, data: booted.data };
    r.rec.address = booted.address;
  },
};
