// Stand-in LevelApi used by the wiring until the full Level (src/level) is
// integrated: answers Status and Identify from config, refuses everything else
// with NotImplemented. Imported only by src/daemon/wiring.ts.

import type { HsdConfig } from "../config/config.js";
import { NotImplementedError } from "../errors/hs-error.js";
import type { EventSink, Identity, LevelApi, LevelStatus, NestOptions } from "../nest/events.js";

export interface IdentityParts { publicKey: string; hostKeyFingerprint: string; sshAddress: string }

export class BasicLevel implements LevelApi {
  constructor(private readonly config: HsdConfig, private readonly version: string, private readonly identity: () => IdentityParts) {}

  async nest(_o: NestOptions, _s: EventSink, _sig: AbortSignal): Promise<void> { throw new NotImplementedError("nest is not wired into this hsd yet"); }
  async status(): Promise<LevelStatus> {
    const c = this.config;
    const id = this.identity();
    return {
      name: c.level.name, depth: c.level.depth, state: "ready", address: id.sshAddress, hsdVersion: this.version,
      hostKeyFingerprint: id.hostKeyFingerprint, provider: c.nest.provider, repos: [], phases: [], children: [], outOfSync: false,
    };
  }
  async destroy(): Promise<void> { throw new NotImplementedError("destroy is not wired into this hsd yet"); }
  async sync(): Promise<void> { throw new NotImplementedError("sync is not wired into this hsd yet"); }
  async identify(): Promise<Identity> {
    const c = this.config;
    return { name: c.level.name, depth: c.level.depth, hsdVersion: this.version, ...this.identity(), repos: [] };
  }
  async putSecrets(): Promise<string[]> { throw new NotImplementedError("putSecrets is not wired into this hsd yet"); }
  async configure(): Promise<void> { throw new NotImplementedError("configure is not wired into this hsd yet"); }
}
