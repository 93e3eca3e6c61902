// secrets: deliver the child's site.yaml and scoped homestak secrets inside
// the request; the child writes its own config/ files. Only key names are
// logged or emitted.
// Imported by: src/nest/phases.

import { encodeLevelFiles, scopeForChild } from "../../homestak/site-config.js";
import type { PhaseHook } from "../phase-hook.js";

export const secretsPhase: PhaseHook = {
  name: "secrets",
  redoable: true,
  async run(r) {
    const [tree, site] = await Promise.all([r.readSecrets(), r.readSite()]);
    const scoped = scopeForChild(tree, r.config.secrets.passDown, { name: r.self.name, publicKey: r.self.publicKey });
    const link = await r.link();
    const keys = await link.putSecrets(encodeLevelFiles({ secrets: scoped, ...(site !== undefined ? { site } : {}) }));
    r.emit({ kind: "log", message: `config/site.yaml ${site !== undefined ? "delivered" : "absent here"}; secrets keys: ${keys.join(", ")}` });
  },
};
