// install: put hsd and its config on the child, start it, and wait for it to
// report ready (event-driven; the provider resolves on the child's signal).
// Imported by: src/nest/phases.

import { inheritedConfig } from "../../config/write-config.js";
import type { PhaseHook } from "../phase-hook.js";
import { imagesOf } from "../../domain/plan.js";

export const installPhase: PhaseHook = {
  name: "install",
  async run(r) {
    const { handle, endpoint } = await r.provider.install(r.rec.handle!, {
      name: r.rec.name,
      depth: r.self.depth + 1,
      parentHost: r.self.sshAdvertiseHost,
      parentPort: r.self.sshPort,
      parentHostKeyFingerprint: r.self.hostKeyFingerprint,
      parentHostKey: r.self.hostKey,
      parentPublicKey: r.self.publicKey,
      repoNames: r.config.repoNames,
      // A manifest child holds exactly the images of the nodes below it (it makes its children from them and passes them on).
      // The images' sha256 and size as this level knows them: the child then moves their bytes without asking first.
      extraConfig: inheritedConfig(r.config, r.request.plan && r.rec.node ? imagesOf(r.request.plan.nodes) : undefined, await r.knownImages()),
      ...(r.rec.node && r.rec.manifest ? { node: { spec: r.rec.node.spec, manifest: r.rec.manifest } } : {}),
    }, { signal: r.signal, log: r.log, emit: r.emit });
    r.rec.handle = handle;
    r.rec.endpoint = endpoint;
  },
};
