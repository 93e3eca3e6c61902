// What a PVE install leaves on a real-guest VM that is itself a PVE node, as a read-only
// disk labelled hsdpvenode (the image's hsd-pvenode.service mounts it early in boot and
// runs its `setup`): pveproxy's certificate, pveum/pvesm/pvecm/qm (sim-shim.mjs against
// the simulator standing in for this node's PVE, run by a node binary on the disk), the
// API on 127.0.0.1:8006 (a TCP relay to that simulator), kvm_intel nested=Y, and a PVE
// node's network: the NIC enslaved to a bridge named like the level's pve.bridge, which
// carries the DHCP address (same MAC, so the same lease). Mirrors sim-vm.ts's namespace
// node. Test-only.
// Imported by: test/pve-sim/sim-qemu.ts.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { shq as q } from "./fake-systemctl.js";
import type { VmNode } from "./sim-vm.js";

const run = promisify(execFile);
const SHIM = fileURLToPath(new URL("./sim-shim.mjs", import.meta.url));
const MOUNT = "/run/hsd-pvenode";

/** A TCP relay 127.0.0.1:8006 -> the simulator: "pveproxy" on the VM. */
const RELAY = `const net=require("net");const [h,p]=process.argv.slice(2);
net.createServer((c)=>{const u=net.connect(Number(p),h);c.pipe(u);u.pipe(c);c.on("error",()=>u.destroy());u.on("error",()=>c.destroy());}).listen(8006,"127.0.0.1");
`;

function setupScript(node: VmNode, bridge: string): string {
  const shim = (cmd: string) => `printf '#!/bin/sh\\nexec ${MOUNT}/node ${MOUNT}/sim-shim.mjs %s ${cmd} "$@"\\n' ${q(q(node.controlUrl))} > /usr/local/sbin/${cmd}`;
  return [
    "#!/bin/sh",
    "set -e",
    "mkdir -p /etc/pve/local /usr/local/sbin /etc/systemd/network",
    `cp ${MOUNT}/pve-ssl.pem /etc/pve/local/pve-ssl.pem`,
    ...["pveum", "pvesm", "pvecm", "qm"].flatMap((c) => [shim(c), `chmod 0755 /usr/local/sbin/${c}`]),
    // The simulator's node answers nested=Y (a TCG guest has no kvm_intel to show).
    "mount -t tmpfs tmpfs /sys/module && mkdir -p /sys/module/kvm_intel/parameters && echo Y > /sys/module/kvm_intel/parameters/nested",
    // A PVE node's network: the NIC in the bridge, the address on the bridge (DHCP keyed by the NIC's MAC).
    "mac=$(cat /sys/class/net/$(ls /sys/class/net | grep -v '^lo$' | head -1)/address)",
    `printf '[NetDev]\\nName=%s\\nKind=bridge\\nMACAddress=%s\\n' ${q(bridge)} "$mac" > /etc/systemd/network/01-hsd-pvenode.netdev`,
    `printf '[Match]\\nMACAddress=%s\\nType=ether\\n[Network]\\nBridge=%s\\n' "$mac" ${q(bridge)} > /etc/systemd/network/01-hsd-pvenode-nic.network`,
    `printf '[Match]\\nName=%s\\n[Network]\\nDHCP=ipv4\\n[DHCPv4]\\nClientIdentifier=mac\\n' ${q(bridge)} > /etc/systemd/network/02-hsd-pvenode-bridge.network`,
    `setsid ${MOUNT}/node ${MOUNT}/relay.cjs ${q(node.apiHost)} ${node.apiPort} </dev/null >/dev/null 2>&1 &`,
    "",
  ].join("\n");
}

/** Builds the disk under dir; returns its path. */
export async function buildNodeDisk(o: { dir: string; node: VmNode; bridge: string }): Promise<string> {
  const src = join(o.dir, "pvenode");
  await mkdir(src, { recursive: true });
  await copyFile(process.execPath, join(src, "node"));
  await copyFile(SHIM, join(src, "sim-shim.mjs"));
  await copyFile(o.node.certFile, join(src, "pve-ssl.pem"));
  await writeFile(join(src, "relay.cjs"), RELAY);
  await writeFile(join(src, "setup"), setupScript(o.node, o.bridge), { mode: 0o755 });
  const img = join(o.dir, "pvenode.img");
  await run("mkfs.ext4", ["-q", "-F", "-L", "hsdpvenode", "-d", src, img, "256M"], { timeout: 60_000 });
  return img;
}
