// provision: the provider creates the child machine (not yet started). A child
// that will run hsd comes with its install spec: a provider may stage hsd to
// start during the boot (pve: the boot CD), and install then finds it running.
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";
import { installSpec } from "../install-spec.js";

export const provisionPhase: PhaseHook = {
  name: "provision",
  async run(r) {
    const spec = r.rec.node?.type === "vm" ? undefined : await installSpec(r);
    r.rec.handle = await r.provider.provision(r.rec.name, r.self.depth + 1, { signal: r.signal, log: r.log, emit: r.emit }, r.rec.node, spec);
  },
};
