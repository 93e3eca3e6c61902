// sync: the child fetches the repo set from this level over SSH git and reports
// the commits it now has.
// Imported by: src/nest/phases.

import type { PhaseHook } from "../phase-hook.js";

export const syncPhase: PhaseHook = {
  name: "sync",
  readsExports: true,
  async run(r) {
    const link = await r.link();
    let repos = r.rec.repos;
    // A re-run (a resumed nest): the child skips the repos it already holds as this level serves them.
    const parentRefs = await r.exportRefs();
    await link.sync({ recursive: false, ...(parentRefs ? { parentRefs } : {}) }, (ev) => {
      if (ev.repos && ev.repos.length > 0 && ev.levelPath.length === 1) repos = [...ev.repos];
      if (ev.kind === "progress" || ev.kind === "log") r.relay(ev);
    }, r.signal);
    r.rec.repos = repos;
  },
};
