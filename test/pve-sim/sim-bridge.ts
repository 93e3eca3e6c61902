// The `ip` arguments that make a simulated network's bridge (the host's segment,
// and each PVE-node VM's own vmbr0) with a MAC fixed at creation. Test-only;
// imported by test/pve/pve-tree.ts, test/pve-sim/sim-vm.ts and test/guest/guest-lan.ts.

import { randomBytes } from "node:crypto";

/**
 * `ip link add <name> address <mac> type bridge`. Linux gives a bridge whose
 * MAC was never set the lowest MAC of its ports, so stopping the VM whose veth
 * had it changed the bridge's MAC under every other VM's ARP entry, and their
 * connections through it went dark until ARP gave up (a 10 s ConnectTimeout in
 * a destroy). A real PVE node's vmbr0 keeps one MAC (ifupdown2 sets it), and a
 * MAC set here is never recomputed.
 */
export function bridgeAddArgs(name: string): string[] {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02; // locally administered, unicast
  const mac = [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
  return ["link", "add", name, "address", mac, "type", "bridge"];
}
