// In-memory AccessApi stub so AccessService answers before the SSH endpoint's
// AuthorizedKeyStore is wired in (the lead swaps it in wiring.ts). Keys live
// only as long as the process. Imported only by src/daemon/wiring.ts.

import { createHash } from "node:crypto";
import type { AccessApi, AuthorizedKey, KeyRole } from "../nest/events.js";

/** SHA256 fingerprint of an OpenSSH key line's blob, as ssh-keygen -l prints it. */
function fingerprint(publicKey: string): string {
  const blob = Buffer.from(publicKey.split(" ")[1] ?? "", "base64");
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

export class MemoryAccess implements AccessApi {
  private readonly keys = new Map<string, AuthorizedKey>();

  async addKey(key: { publicKey: string; role: KeyRole; comment?: string }): Promise<AuthorizedKey> {
    const fp = fingerprint(key.publicKey);
    const stored: AuthorizedKey = { publicKey: key.publicKey, role: key.role, fingerprint: fp, comment: key.comment ?? "" };
    this.keys.set(fp, stored);
    return stored;
  }

  async removeKey(sel: { publicKey?: string; fingerprint?: string }): Promise<boolean> {
    const fp = sel.fingerprint ?? (sel.publicKey ? fingerprint(sel.publicKey) : "");
    return this.keys.delete(fp);
  }

  async listKeys(): Promise<AuthorizedKey[]> {
    return [...this.keys.values()];
  }
}
