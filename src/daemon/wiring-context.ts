// What the daemon's wiring hands the level's wiring: config, log, identity and
// the shutdown request; and what a started SSH endpoint reports back.
// Imported by: src/daemon.

import type { HsdConfig } from "../config/config.js";
import type { AccessApi } from "../domain/level-api.js";
import type { Logger } from "../log/logger.js";
import type { LogRing } from "../log/log-ring.js";

/** Who this level is, as far as the SSH endpoint knows (empty until it listens). */
export interface IdentityParts {
  publicKey: string; hostKeyFingerprint: string; sshAddress: string;
  /** The SSH endpoint's host public key line ("" until it listens). */
  hostKey: string;
}

/** What a started SSH endpoint tells the rest of the daemon. */
export interface SshHandle {
  readonly host: string;
  readonly port: number;
  readonly hostKeyFingerprint: string;
  /** The endpoint's host public key ("<type> <base64>"). */
  readonly hostKey: string;
  /** This level's own public key (OpenSSH line). */
  readonly publicKey: string;
  close(): Promise<void>;
}

export interface WiringContext {
  readonly config: HsdConfig;
  readonly log: Logger;
  readonly version: string;
  readonly access: AccessApi;
  /** Current identity; empty strings until the SSH endpoint listens. */
  readonly identity: () => IdentityParts;
  /** Asks the daemon to stop gracefully (Destroy{self}). */
  readonly requestShutdown: () => void;
  /** The recent lines of this daemon's own log (hsctl logs). */
  readonly logRing?: LogRing;
}
