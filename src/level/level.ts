// PLACEHOLDER (lead engineer replaces this): the daemon's LevelApi implementation.
// Imported only by src/daemon wiring.

import type { AccessApi, EventSink, Identity, LevelApi, LevelStatus, NestOptions } from "../nest/events.js";
import { NotImplementedError } from "../errors/hs-error.js";
import type { HsdConfig } from "../config/config.js";
import type { Logger } from "../log/logger.js";

export interface LevelDeps {
  config: HsdConfig;
  log: Logger;
  version: string;
  /** Filled in by the SSH endpoint once it listens. */
  identity: () => Promise<Pick<Identity, "publicKey" | "hostKeyFingerprint" | "sshAddress">>;
}

export class Level implements LevelApi {
  constructor(private readonly deps: LevelDeps) {}
  async nest(_o: NestOptions, _s: EventSink, _sig: AbortSignal): Promise<void> { throw new NotImplementedError("nest"); }
  async status(): Promise<LevelStatus> {
    const c = this.deps.config;
    const id = await this.deps.identity();
    return {
      name: c.level.name, depth: c.level.depth, state: "ready", address: id.sshAddress, hsdVersion: this.deps.version,
      hostKeyFingerprint: id.hostKeyFingerprint, provider: c.nest.provider, repos: [], phases: [], children: [], outOfSync: false,
    };
  }
  async destroy(): Promise<void> { throw new NotImplementedError("destroy"); }
  async sync(): Promise<void> { throw new NotImplementedError("sync"); }
  async identify(): Promise<Identity> {
    const c = this.deps.config;
    const id = await this.deps.identity();
    return { name: c.level.name, depth: c.level.depth, hsdVersion: this.deps.version, ...id, repos: [] };
  }
  async putSecrets(): Promise<string[]> { throw new NotImplementedError("putSecrets"); }
  async configure(): Promise<void> { throw new NotImplementedError("configure"); }
}

export type { AccessApi };
