// A real-guest VM's cloud-init drive, generated from the VM's config the way PVE's
// qemu-server does for citype nocloud: user-data is the cicustom user= snippet as is
// (else generated from ciuser/sshkeys), network-config (v1) from net0's MAC and
// ipconfig0, meta-data an instance-id that changes with the config. An ISO labelled
// cidata (genisoimage). Test-only.
// Imported by: test/pve-sim/sim-qemu.ts.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

const run = promisify(execFile);

/** net0's MAC (virtio=BC:24:11:..), else one PVE-style (its BC:24:11 prefix), unique per run and host number. */
export function vmMac(net0: string | undefined, tag: string, host: number): string {
  const m = /(?:^|,)(?:virtio|e1000|vmxnet3|rtl8139)=([0-9A-Fa-f:]{17})/.exec(net0 ?? "");
  if (m) return m[1]!.toLowerCase();
  const h = createHash("sha256").update(`${tag}/${host}`).digest();
  return `bc:24:11:${[h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
}

function netmask(prefix: number): string {
  const n = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

/** ipconfig0 (ip=dhcp | ip=A.B.C.D/N[,gw=G], ip6=dhcp|auto|ADDR/N[,gw6=G]) as network-config v1 subnets. */
export function networkConfig(mac: string, ipconfig: string | undefined): string {
  const kv = Object.fromEntries((ipconfig ?? "").split(",").filter(Boolean).map((p) => p.split("=") as [string, string]));
  const subnets: string[] = [];
  if (kv.ip === "dhcp") subnets.push("      - type: dhcp4");
  else if (kv.ip) {
    const [addr, len] = kv.ip.split("/");
    subnets.push(`      - type: static\n        address: '${addr}'\n        netmask: '${netmask(Number(len ?? 32))}'${kv.gw ? `\n        gateway: '${kv.gw}'` : ""}`);
  }
  if (kv.ip6 === "dhcp") subnets.push("      - type: dhcp6");
  else if (kv.ip6 === "auto") subnets.push("      - type: ipv6_slaac");
  else if (kv.ip6) subnets.push(`      - type: static6\n        address: '${kv.ip6}'${kv.gw6 ? `\n        gateway: '${kv.gw6}'` : ""}`);
  return ["version: 1", "config:", "    - type: physical", "      name: eth0", `      mac_address: '${mac}'`,
    ...(subnets.length ? ["      subnets:", ...subnets.map((s) => s.replace(/^ {6}/gm, "      "))] : []), ""].join("\n");
}

/** PVE's own user-data when no user snippet is given: the name, ciuser and the sshkeys. */
function generatedUserData(name: string, config: Record<string, string>): string {
  const keys = decodeURIComponent(config.sshkeys ?? "").split("\n").map((l) => l.trim()).filter(Boolean);
  return ["#cloud-config", `hostname: ${name}`, "manage_etc_hosts: true",
    ...(config.ciuser ? [`user: ${config.ciuser}`] : []), "disable_root: false",
    ...(keys.length ? ["ssh_authorized_keys:", ...keys.map((k) => `  - ${k}`)] : []),
    "chpasswd:", "  expire: False", `package_upgrade: ${config.ciupgrade === "0" ? "false" : "true"}`, ""].join("\n");
}

/** Writes the seed's files and the ISO under dir; returns the ISO's path. */
export async function buildSeedIso(o: { dir: string; vmid: number; name: string; config: Record<string, string>; userData?: string; mac: string }): Promise<string> {
  const src = join(o.dir, "cidata");
  await mkdir(src, { recursive: true });
  const user = o.userData ?? generatedUserData(o.name.replace(/[^A-Za-z0-9-]/g, "-"), o.config);
  const network = networkConfig(o.mac, o.config.ipconfig0);
  const id = createHash("sha1").update(user).update(network).digest("hex");
  await writeFile(join(src, "user-data"), user, { mode: 0o600 });
  await writeFile(join(src, "network-config"), network);
  await writeFile(join(src, "meta-data"), `instance-id: ${id}\n`);
  const iso = join(o.dir, "cloudinit.iso");
  await run("genisoimage", ["-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock",
    join(src, "user-data"), join(src, "meta-data"), join(src, "network-config")], { timeout: 30_000 });
  return iso;
}
