// install: put hsd and its config on the child, start it, and wait for it to
// report ready (event-driven; the provider resolves on the child's signal).
// Imported by: src/nest/phases.

import { inheritedConfig } from "../../config/write-config.js";
import type { PhaseHook } from "../phase-hook.js";

export const installPhase: PhaseHook = {
  name: "install",
  async run(r) {
    const { handle, endpoint } = await r.provider.install(r.rec.handle!, {
      name: r.rec.name,
      depth: r.self.depth + 1,
      parentHost: r.self.sshAdvertiseHost,
      parentPort: r.self.sshPort,
      parentHostKeyFingerprint: r.self.hostKeyFingerprint,
      parentPublicKey: r.self.publicKey,
      repoNames: r.config.repoNames,
      extraConfig: inheritedConfig(r.config),
      ...(r.rec.node && r.rec.manifest ? { node: { spec: r.rec.node.spec, manifest: r.rec.manifest } } : {}),
    }, { signal: r.signal, log: r.log, emit: r.emit });
    r.rec.handle = handle;
    r.rec.endpoint = endpoint;
  },
};
