// The real-guest simulator's NoCloud seed (test/pve-sim/sim-qemu-seed.ts): what PVE
// would hand cloud-init for a VM config. The ISO is read back with isoinfo and blkid
// (label cidata, the three files), as cloud-init's NoCloud finds and reads it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { buildSeedIso, networkConfig, vmMac } from "../pve-sim/sim-qemu-seed.js";

test("network-config v1 from ipconfig0: dhcp, static with gateway, SLAAC, and the NIC matched by MAC", () => {
  const dhcp = parse(networkConfig("bc:24:11:aa:bb:cc", "ip=dhcp")) as { version: number; config: Record<string, unknown>[] };
  assert.equal(dhcp.version, 1);
  assert.deepEqual(dhcp.config, [{ type: "physical", name: "eth0", mac_address: "bc:24:11:aa:bb:cc", subnets: [{ type: "dhcp4" }] }]);
  const st = parse(networkConfig("bc:24:11:aa:bb:cc", "ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto")) as { config: { subnets: unknown[] }[] };
  assert.deepEqual(st.config[0]!.subnets, [
    { type: "static", address: "10.0.0.5", netmask: "255.255.255.0", gateway: "10.0.0.1" }, { type: "ipv6_slaac" },
  ]);
  assert.deepEqual((parse(networkConfig("bc:24:11:aa:bb:cc", undefined)) as { config: Record<string, unknown>[] }).config[0]!.subnets, undefined);
});

test("the MAC is net0's when it has one, else a stable BC:24:11 one per run and host", () => {
  assert.equal(vmMac("virtio=BC:24:11:12:34:56,bridge=vmbr0", "t", 1), "bc:24:11:12:34:56");
  assert.match(vmMac("virtio,bridge=vmbr0", "t", 1), /^bc:24:11(:[0-9a-f]{2}){3}$/);
  assert.equal(vmMac(undefined, "t", 1), vmMac(undefined, "t", 1));
  assert.notEqual(vmMac(undefined, "t", 1), vmMac(undefined, "t", 2));
});

test("the seed ISO is labelled cidata and carries the snippet unchanged, or user data generated from sshkeys", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sim-seed-test-"));
  try {
    const config = { sshkeys: encodeURIComponent("ssh-ed25519 AAAAkey1 a@b\nssh-ed25519 AAAAkey2 c@d"), ipconfig0: "ip=dhcp", ciupgrade: "0" };
    const snippet = "#cloud-config\nhostname: l1\nruncmd: [[true]]\n";
    const iso = await buildSeedIso({ dir: join(dir, "a"), vmid: 100, name: "hsd-l1", config, userData: snippet, mac: "bc:24:11:00:00:01" });
    assert.equal(execFileSync("blkid", ["-o", "value", "-s", "LABEL", iso], { encoding: "utf8" }).trim(), "cidata");
    const read = (f: string, at = iso) => execFileSync("isoinfo", ["-R", "-i", at, "-x", `/${f}`], { encoding: "utf8" });
    assert.equal(read("user-data"), snippet);
    assert.match(read("meta-data"), /^instance-id: [0-9a-f]{40}\n$/);
    assert.match(read("network-config"), /mac_address: 'bc:24:11:00:00:01'/);

    const gen = await buildSeedIso({ dir: join(dir, "b"), vmid: 101, name: "hsd-l2", config, mac: "bc:24:11:00:00:02" });
    const user = read("user-data", gen);
    assert.match(user, /^#cloud-config\n/);
    assert.deepEqual((parse(user) as { ssh_authorized_keys: string[] }).ssh_authorized_keys, ["ssh-ed25519 AAAAkey1 a@b", "ssh-ed25519 AAAAkey2 c@d"]);
    assert.equal((parse(user) as { package_upgrade: boolean }).package_upgrade, false);
  } finally { await rm(dir, { recursive: true, force: true }); }
});
