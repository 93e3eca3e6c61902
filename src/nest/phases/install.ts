// install: put hsd and its config on the child, start it, and wait for it to
// report ready (event-driven; the provider resolves on the child's signal).
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";
import { installSpec } from "../install-spec.js";

export const installPhase: PhaseHook = {
  name: "install",
  async run(r) {
    const { handle, endpoint } = await r.provider.install(r.rec.handle!, await installSpec(r), { signal: r.signal, log: r.log, emit: r.emit });
    r.rec.handle = handle;
    r.rec.endpoint = endpoint;
  },
};
