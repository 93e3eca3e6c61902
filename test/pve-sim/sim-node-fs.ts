// Where a simulated node's storage paths live on the host. A node that is the
// host itself (level 0) keeps its files under the simulator's root; a node
// that is a VM (its parent's nodeFor) has PVE's own `local` path, /var/lib/vz,
// and the files there are the VM's: the simulator reads them through the VM's
// root as the host sees it (/proc/<pid>/root of a process in the VM's mount
// namespace), so what the VM's hsd writes into its /var/lib/vz (received
// images, import volumes, snippets) is exactly what the node's API finds.
// Test-only; imported by pve-sim.ts and pve-sim-api.ts.

import { join } from "node:path";

/** PVE's `local` dir storage path on every node. */
export const VM_VZ = "/var/lib/vz";

export class SimNodeFs {
  private root?: string;

  constructor(readonly isVm: boolean) {}

  /** The VM standing for this node is running: its "/" on the host. */
  attach(fsRoot: string): void { this.root = fsRoot; }

  /** The VM is gone, and its files with it. */
  detach(): void { this.root = undefined; }

  /**
   * A path on this node as the host can open it. Throws while a VM node is not
   * running, as PVE cannot answer from a node that is down.
   */
  hostPath(nodePath: string): string {
    if (!this.isVm) return nodePath;
    if (!this.root) throw new Error(`this node's VM is not running (no filesystem for ${nodePath})`);
    return join(this.root, nodePath);
  }
}
