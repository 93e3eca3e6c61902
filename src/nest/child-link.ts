// How a parent talks to one child: the child's ChildApi plus close(). The real
// implementation (src/rpc/grpc-child-link.ts) is gRPC over an SSH tunnel; tests
// may pass in-process links.
// Imported by: src/daemon, src/level, src/nest, src/rpc.

import type { ChildApi } from "../domain/level-api.js";
import type { ChildEndpoint } from "../providers/provider.js";

export interface ChildLink extends ChildApi {
  close(): Promise<void>;
}

/** Opens a link; must give up after the connect timeout (never a command timeout). */
export type ConnectChild = (name: string, endpoint: ChildEndpoint, signal: AbortSignal) => Promise<ChildLink>;

/** One cached link per child; a failed call's owner drops it so the next use reconnects. */
export class ChildLinks {
  private readonly links = new Map<string, Promise<ChildLink>>();

  constructor(private readonly connect: ConnectChild) {}

  get(name: string, endpoint: ChildEndpoint, signal: AbortSignal): Promise<ChildLink> {
    let p = this.links.get(name);
    if (!p) {
      p = this.connect(name, endpoint, signal);
      this.links.set(name, p);
      p.catch(() => { if (this.links.get(name) === p) this.links.delete(name); });
    }
    return p;
  }

  async drop(name: string): Promise<void> {
    const p = this.links.get(name);
    this.links.delete(name);
    if (p) await p.then((l) => l.close(), () => {});
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.links.keys()].map((n) => this.drop(n)));
  }
}
