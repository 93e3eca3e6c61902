// secrets: deliver the child's scoped secrets inside the request; the child
// writes its own file. Only key names are logged or emitted.
// Imported by: src/nest/phases.

import { stringify } from "yaml";
import { scopeSecrets } from "../../secrets/secrets-store.js";
import type { PhaseHook } from "../phase-hook.js";

export const secretsPhase: PhaseHook = {
  name: "secrets",
  async run(r) {
    const scoped = scopeSecrets(await r.readSecrets(), r.config.secrets.passDown, r.self.publicKey);
    const link = await r.link();
    const keys = await link.putSecrets(stringify(scoped));
    r.emit({ kind: "log", message: `delivered keys: ${keys.join(", ")}` });
  },
};
