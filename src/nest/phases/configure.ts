// configure: the child configures itself from its synced repos. A reboot the
// child announces on the way (a step's PVE install) is ridden out inside the
// phase (../reboot-wait.ts).
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";
import { callAcrossReboots } from "../reboot-wait.js";

export const configurePhase: PhaseHook = {
  name: "configure",
  async run(r) {
    await callAcrossReboots({
      child: r.rec.name, link: r.link, dropLink: r.dropLink, relay: r.relay, signal: r.signal, log: r.log, now: r.now,
      call: (link, sink, signal) => link.configure(sink, signal),
      note: (message) => r.emit({ kind: "log", message }),
    });
  },
};
