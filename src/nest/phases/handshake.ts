// handshake: tunnel to the child's gRPC, learn its identity and public key,
// check its host key is the one the provider reported, and authorize the
// child's key as a reader on this level's SSH endpoint.
// Imported by: src/nest/phases.

import { HostKeyMismatchError } from "../../domain/errors.js";
import type { PhaseHook } from "../phase-hook.js";

export const handshakePhase: PhaseHook = {
  name: "handshake",
  async run(r) {
    const link = await r.link();
    const id = await link.identify();
    if (id.hostKeyFingerprint !== r.rec.endpoint!.hostKeyFingerprint) {
      throw new HostKeyMismatchError(
        `child ${r.rec.name} reports host key ${id.hostKeyFingerprint}, expected ${r.rec.endpoint!.hostKeyFingerprint}`,
        { details: { expected: r.rec.endpoint!.hostKeyFingerprint, actual: id.hostKeyFingerprint } },
      );
    }
    await r.access.addKey({ publicKey: id.publicKey, role: "reader", comment: `hsd child ${r.rec.name}` });
    r.rec.publicKey = id.publicKey;
    r.rec.hsdVersion = id.hsdVersion;
    r.emit({ kind: "log", message: `child ${id.name} runs hsd ${id.hsdVersion}; authorized as reader` });
  },
};
