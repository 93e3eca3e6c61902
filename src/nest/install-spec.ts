// What a child that runs hsd is told at install: its name and depth, this level's
// endpoint and keys, the repos and the config it inherits. Built from the phase run
// alone, so provision (a provider may stage hsd to start during the boot) and install
// write the same config.
// Imported by: src/nest/phases.

import { inheritedConfig } from "../config/write-config.js";
import type { PhaseRun } from "./phase-hook.js";
import type { ChildInstallSpec } from "../providers/provider.js";
import { imagesOf } from "../domain/plan.js";

export async function installSpec(r: PhaseRun): Promise<ChildInstallSpec> {
  return {
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
  };
}
