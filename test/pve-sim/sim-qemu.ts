// The PVE simulator's real-guest VMs (issue 18): a started VM is a QEMU (TCG) Debian 12
// guest booted from the cached image of scripts/guest-image.sh, its NIC a tap on the
// test's bridge, its cloud-init drive a NoCloud seed built from the VM's config as PVE
// builds it (sim-qemu-seed.ts), its guest agent the real qemu-guest-agent behind a
// virtio-serial socket (sim-qga.ts). stop kills QEMU (after QMP quit), shutdown is ACPI
// (QMP system_powerdown). A VM that is itself a PVE node gets a second disk with what a
// PVE install leaves (sim-qemu-node.ts). Test-only.
// Imported by: test/pve-sim/pve-sim.ts, test/pve-sim/pve-sim-api.ts, test/guest/.

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { GuestImage } from "../guest/qemu-guest.js";
import type { VmNetwork, VmNode } from "./sim-vm.js";
import { buildSeedIso, vmMac } from "./sim-qemu-seed.js";
import { buildNodeDisk } from "./sim-qemu-node.js";
import { QgaChannel, qmpCommand } from "./sim-qga.js";
import type { SimNodeFs } from "./sim-node-fs.js";

const run = promisify(execFile);

export interface QemuGuests {
  readonly image: GuestImage;
  /** Caps on what the VM config asks (TCG guests on a shared 2-core host). */
  readonly maxCores?: number;
  readonly maxMemoryMiB?: number;
}

export interface SimQemuVm {
  readonly vmid: number;
  readonly dir: string;
  readonly tap: string;
  readonly tapNetns?: string;
  readonly mac: string;
  readonly qmpPath: string;
  readonly consolePath: string;
  readonly proc: ChildProcess;
  readonly startedAt: number;
  /** Resolves when QEMU has exited (guest power-off, stop, crash). */
  readonly exited: Promise<void>;
  readonly agent: QgaChannel;
}

export async function startQemuVm(o: {
  vmid: number; name: string; dir: string; config: Record<string, string>; userData?: string;
  net: VmNetwork; qemu: QemuGuests; node?: VmNode;
  /** The ISOs of its CD-ROMs (config `<bus><n>: <storage>:iso/<file>,media=cdrom`), by config key. */
  cdroms?: readonly { readonly key: string; readonly data: Buffer }[];
}): Promise<SimQemuVm> {
  const { dir, net } = o;
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const host = net.alloc.next++;
  const tap = `${net.tag}q${host}`.slice(0, 15);
  const mac = vmMac(o.config.net0, net.tag, host);
  const seed = await buildSeedIso({ dir, vmid: o.vmid, name: o.name, config: o.config, userData: o.userData, mac });
  const nodeDisk = o.node ? await buildNodeDisk({ dir, node: o.node, bridge: net.bridge }) : undefined;
  const cdroms: string[] = [];
  for (const cd of o.cdroms ?? []) {
    const file = join(dir, `${cd.key}.iso`);
    await writeFile(file, cd.data);
    cdroms.push(file);
  }
  const at = net.netns ? ["-n", net.netns] : [];
  await run("ip", [...at, "tuntap", "add", "dev", tap, "mode", "tap"], { timeout: 20_000 });
  try {
    await run("ip", [...at, "link", "set", tap, "master", net.bridge, "up"], { timeout: 20_000 });
  } catch (e) {
    await run("ip", [...at, "link", "del", tap]).catch(() => {});
    throw e;
  }
  const qmpPath = join(dir, "qmp.sock");
  const qgaPath = join(dir, "qga.sock");
  const consolePath = join(dir, "console.log");
  const cores = Math.min(Number(o.config.cores ?? 1) || 1, o.qemu.maxCores ?? 2);
  const memory = Math.min(Number(/\d+/.exec(o.config.memory ?? "")?.[0] ?? 1024), o.qemu.maxMemoryMiB ?? 1536);
  const cmdline = ["root=/dev/vda", "rw", "console=ttyS0", "quiet", "panic=-1", ...(nodeDisk ? ["hsd.pvenode"] : [])].join(" ");
  const args = [
    "-accel", "tcg,thread=multi", "-smp", String(cores), "-m", String(memory),
    "-nodefaults", "-display", "none", "-name", `vm${o.vmid}`,
    "-kernel", o.qemu.image.kernel, "-initrd", o.qemu.image.initrd, "-append", cmdline,
    // The cached image is never written (snapshot=on): every VM is a fresh linked clone.
    "-drive", `file=${o.qemu.image.rootfs},format=raw,if=virtio,snapshot=on`,
    // PVE attaches the seed as a CD-ROM (ide2); the cloud kernel has virtio, not ATA: same ISO, virtio disk.
    "-drive", `file=${seed},format=raw,if=virtio,readonly=on`,
    ...(nodeDisk ? ["-drive", `file=${nodeDisk},format=raw,if=virtio,readonly=on`] : []),
    // Its other CD-ROMs (hsd's boot CD) the same way: found by their label, as on PVE.
    ...cdroms.flatMap((f) => ["-drive", `file=${f},format=raw,if=virtio,readonly=on`]),
    "-netdev", `tap,id=n0,ifname=${tap},script=no,downscript=no`, "-device", `virtio-net-pci,netdev=n0,mac=${mac}`,
    // PVE's agent channel: a virtio-serial port named org.qemu.guest_agent.0 behind a host socket.
    "-chardev", `socket,id=qga0,path=${qgaPath},server=on,wait=off`,
    "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    "-serial", `file:${consolePath}`, "-qmp", `unix:${qmpPath},server=on,wait=off`,
  ];
  const proc = net.netns
    ? spawn("ip", ["netns", "exec", net.netns, "qemu-system-x86_64", ...args], { stdio: ["ignore", "ignore", "pipe"] })
    : spawn("qemu-system-x86_64", args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.setEncoding("utf8").on("data", (c: string) => { if (stderr.length < 8192) stderr += c; });
  const exited = new Promise<void>((r) => proc.on("close", () => r()));
  const vm: SimQemuVm = {
    vmid: o.vmid, dir, tap, tapNetns: net.netns, mac, qmpPath, consolePath, proc, startedAt: Date.now(), exited,
    agent: new QgaChannel(qgaPath, o.vmid),
  };
  try {
    // Started once QMP answers: PVE's start task ends when the QEMU process runs, not when the guest is up.
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`qemu exited: ${stderr}`);
      if (existsSync(qmpPath)) {
        try { await qmpCommand(qmpPath, "query-status", 5000); break; } catch (e) {
          if (Date.now() > deadline) throw e;
        }
      }
      if (Date.now() > deadline) throw new Error(`qemu answered no QMP within 30 s: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100)); // polling a socket file QEMU is about to create
    }
  } catch (e) {
    await stopQemuVm(vm);
    throw e;
  }
  return vm;
}

/** `qm stop`: QMP quit, SIGKILL if QEMU lingers; the tap and the VM's files go. */
export async function stopQemuVm(vm: SimQemuVm): Promise<void> {
  if (vm.proc.exitCode === null && vm.proc.signalCode === null) {
    await qmpCommand(vm.qmpPath, "quit", 5000).catch(() => {});
    const t = setTimeout(() => vm.proc.kill("SIGKILL"), 5000);
    await vm.exited;
    clearTimeout(t);
  }
  vm.agent.close();
  await run("ip", [...(vm.tapNetns ? ["-n", vm.tapNetns] : []), "link", "del", vm.tap]).catch(() => {});
  await rm(vm.dir, { recursive: true, force: true });
}

/**
 * `qm shutdown`: ACPI power button (QMP system_powerdown) and wait for the guest to power
 * itself off; PVE's error when it does not within the timeout (the VM keeps running).
 */
export async function shutdownQemuVm(vm: SimQemuVm, timeoutMs: number): Promise<void> {
  if (vm.proc.exitCode !== null || vm.proc.signalCode !== null) return;
  await qmpCommand(vm.qmpPath, "system_powerdown", 5000);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((r) => { timer = setTimeout(() => r(true), timeoutMs); });
  const late = await Promise.race([vm.exited.then(() => false), timedOut]);
  clearTimeout(timer);
  if (late) throw new Error(`VM ${vm.vmid} quit/powerdown failed - got timeout`);
}

/** The serial console so far, for failure messages. */
export function qemuConsole(vm: SimQemuVm): Promise<string> {
  return readFile(vm.consolePath, "utf8").catch(() => "");
}

/** The text of the cicustom user= snippet (PVE passes it as the user-data unchanged); undefined without one. */
export async function qemuSnippet(cicustom: string | undefined, storagePath: (storage: string) => string | undefined, fs: SimNodeFs): Promise<string | undefined> {
  const vol = /(?:^|,)user=([^,]+)/.exec(cicustom ?? "")?.[1];
  if (!vol) return undefined;
  const [store, rel] = vol.split(":") as [string, string];
  const base = storagePath(store);
  if (!base) throw new Error(`storage '${store}' does not exist`);
  return (await fs.readFile(join(base, rel))).toString("utf8");
}

/** The guest's IPv4 address from the agent's guest-network-get-interfaces (not lo); throws while none. */
export function qemuGuestAddress(result: unknown): string {
  const ifaces = Array.isArray(result) ? result as { name: string; "ip-addresses"?: { "ip-address": string; "ip-address-type": string }[] }[] : [];
  const a = ifaces.filter((i) => i.name !== "lo").flatMap((i) => i["ip-addresses"] ?? []).find((x) => x["ip-address-type"] === "ipv4");
  if (!a) throw new Error("the guest has no IPv4 address yet");
  return a["ip-address"];
}
