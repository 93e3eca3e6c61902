// handshake: tunnel to the child's gRPC, learn its identity and public key,
// check its host key is the one the provider reported, and authorize the
// child's key as a reader on this level's SSH endpoint.
// Imported by: src/nest/phases.

import { HostKeyMismatchError } from "../../domain/errors.js";
import type { PhaseHook } from "../phase-hook.js";

export const handshakePhase: PhaseHook = {
  name: "handshake",
  async run(r) {
    const ep = r.rec.endpoint!;
    const comment = `hsd child ${r.rec.name}`;
    // The key the child's ready report named (beside the host key we pin) is authorized
    // while the tunnel opens: the child, asked who it is, opens its connection back to
    // this level at once (its sync's), and that connection must find its key accepted.
    const early = ep.publicKey ? r.access.addKey({ publicKey: ep.publicKey, role: "reader", comment }) : undefined;
    early?.catch(() => {}); // awaited next
    // Revoked again unless the handshake completes (or an earlier one had authorized it): teardown only knows rec.publicKey.
    const revokeEarly = async () => {
      if (ep.publicKey && !(r.rec.publicKey && sameKey(r.rec.publicKey, ep.publicKey))) await r.access.removeKey({ publicKey: ep.publicKey }).catch(() => false);
    };
    let id;
    try {
      const [link] = await Promise.all([r.link(), early]);
      id = await link.identify();
      if (id.hostKeyFingerprint !== ep.hostKeyFingerprint) {
        throw new HostKeyMismatchError(
          `child ${r.rec.name} reports host key ${id.hostKeyFingerprint}, expected ${ep.hostKeyFingerprint}`,
          { details: { expected: ep.hostKeyFingerprint, actual: id.hostKeyFingerprint } },
        );
      }
      // The child's answer is the word on its key: one its ready report did not name replaces that one.
      if (!ep.publicKey || !sameKey(ep.publicKey, id.publicKey)) {
        await revokeEarly();
        await r.access.addKey({ publicKey: id.publicKey, role: "reader", comment });
      }
    } catch (err) {
      await revokeEarly();
      throw err;
    }
    r.rec.publicKey = id.publicKey;
    r.rec.hsdVersion = id.hsdVersion;
    r.emit({ kind: "log", message: `child ${id.name} runs hsd ${id.hsdVersion}; authorized as reader` });
  },
};

/** The same key whatever the comment: "<type> <base64>" compared. */
function sameKey(a: string, b: string): boolean {
  const part = (k: string) => k.trim().split(/\s+/).slice(0, 2).join(" ");
  return part(a) === part(b);
}
