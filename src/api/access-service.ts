// AccessService handlers: validate key requests at the gRPC boundary and call
// the injected AccessApi (the SSH endpoint's key store in the daemon).
// Imported by: src/api.

import { AccessService } from "../gen/homestak/nest/v1/nest_pb.js";
import { InvalidArgumentError } from "../domain/errors.js";
import type { AccessApi } from "../domain/level-api.js";
import type { MethodsOf, ServiceHandlers } from "../rpc/service-definition.js";
import { fromProtoRole, toProtoKey } from "../rpc/convert.js";

const KEY_RE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$/;
const FP_RE = /^SHA256:[A-Za-z0-9+/]{43}=?$/;
const MAX_KEY_CHARS = 16 * 1024;

/** Checks an OpenSSH one-line public key; returns it trimmed. */
export function validatePublicKey(key: string, field = "public_key"): string {
  const k = key.trim();
  if (k.length === 0) throw new InvalidArgumentError(`${field} is empty`, { details: { field } });
  if (k.length > MAX_KEY_CHARS || !KEY_RE.test(k)) {
    throw new InvalidArgumentError(`${field} is not an OpenSSH public key line (e.g. "ssh-ed25519 AAAA... comment")`, { details: { field } });
  }
  return k;
}

export function accessHandlers(access: AccessApi): ServiceHandlers<MethodsOf<typeof AccessService>> {
  return {
    async addKey(req) {
      if (!req.key) throw new InvalidArgumentError("key is required", { details: { field: "key" } });
      const publicKey = validatePublicKey(req.key.publicKey, "key.public_key");
      const role = fromProtoRole(req.key.role);
      if (!role) throw new InvalidArgumentError("key.role must be reader or controller", { details: { field: "key.role" } });
      const comment = req.key.comment || publicKey.split(" ").slice(2).join(" ");
      const stored = await access.addKey({ publicKey, role, ...(comment ? { comment } : {}) });
      return { key: toProtoKey(stored) };
    },
    async removeKey(req) {
      const sel: { publicKey?: string; fingerprint?: string } = {};
      if (req.publicKey) sel.publicKey = validatePublicKey(req.publicKey);
      if (req.fingerprint) {
        if (!FP_RE.test(req.fingerprint)) throw new InvalidArgumentError("fingerprint must look like SHA256:...", { details: { field: "fingerprint" } });
        sel.fingerprint = req.fingerprint;
      }
      if (!sel.publicKey && !sel.fingerprint) {
        throw new InvalidArgumentError("give public_key or fingerprint", { details: { field: "public_key" } });
      }
      return { removed: await access.removeKey(sel) };
    },
    async listKeys() {
      return { keys: (await access.listKeys()).map(toProtoKey) };
    },
  };
}
