// Real-process VMs (sim-vm.ts) that install Proxmox VE and reboot. A VM made
// from an image without PVE (the simulator's `imagesWithoutPve`) boots with no
// pveproxy, no /etc/pve/local certificate and no pveum & co.; its apt-get
// installs the PVE kernel (effective from the next boot) and then proxmox-ve
// (only under that kernel), which puts them there and starts "pveproxy" (the
// relay to the node's simulator). `systemctl reboot` in the VM asks the owning
// simulator (its control endpoint) to reboot it: every process in the VM gets
// SIGTERM, then SIGKILL after systemd's 10 s; the disk (the overlays' upper
// dirs) and the NIC stay; the VM boots again: sshd, pveproxy when installed,
// and hsd when it is enabled (as systemd starts enabled units). While it goes
// down, `systemctl is-system-running` says `stopping`.
// Test-only; used by sim-vm.ts and pve-sim.ts.

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { shq as q } from "./fake-systemctl.js";

const run = promisify(execFile);
const SHIM = fileURLToPath(new URL("./sim-shim.mjs", import.meta.url));

/** Where a VM keeps what the packages would install, before it is (outside the VM: the guest root). */
const stage = (root: string) => join(root, ".pve-packages");

/** sh lines of the boot: the PVE kernel if installed, pveproxy if PVE is, hsd if enabled. Run inside the VM before sshd. */
export function bootLines(relayCmd: string | undefined): string[] {
  return [
    "[ -e /var/lib/sim-pve/kernel ] && echo pve > /run/sim-kernel || true",
    ...(relayCmd ? [`if [ -e /etc/pve/local/pve-ssl.pem ]; then setsid ${relayCmd} </dev/null >/dev/null 2>&1 & fi`] : []),
    // systemd starts the units enabled in multi-user.target.
    "if [ -e /etc/systemd/system/multi-user.target.wants/hsd.service ]; then PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin systemctl start hsd; fi",
  ];
}

/**
 * The systemctl cases a rebootable VM adds: enable records the unit in
 * multi-user.target, reboot asks the simulator, and from then until the boot
 * (/run is fresh at each) is-system-running answers `stopping`, as systemd does.
 */
export function systemctlCases(o: { controlUrl: string; vmid: number }): string {
  return `  enable) [ "$svc" = hsd ] && { mkdir -p /etc/systemd/system/multi-user.target.wants; ln -sf "$unit" /etc/systemd/system/multi-user.target.wants/hsd.service; }; exit 0 ;;
  disable) rm -f /etc/systemd/system/multi-user.target.wants/hsd.service; exit 0 ;;
  reboot) : > /run/sim-stopping; exec ${q(process.execPath)} ${q(SHIM)} ${q(o.controlUrl)} sim-vm-reboot ${o.vmid} ;;
  is-system-running) if [ -e /run/sim-stopping ]; then echo stopping; exit 1; fi; echo running; exit 0 ;;
`;
}

/**
 * A VM without PVE: its apt-get, and what proxmox-ve would install staged
 * beside it (the node's certificate and the host-command shims).
 */
export async function stagePveInstall(o: { root: string; sbin: string; certFile: string; controlUrl: string; relayCmd: string }): Promise<void> {
  const s = stage(o.root);
  await mkdir(join(s, "sbin"), { recursive: true });
  await copyFile(o.certFile, join(s, "pve-ssl.pem"));
  for (const cmd of ["pveum", "pvesm", "pvecm", "qm"]) {
    await writeFile(join(s, "sbin", cmd), `#!/bin/sh\nexec ${q(process.execPath)} ${q(SHIM)} ${q(o.controlUrl)} ${cmd} "$@"\n`, { mode: 0o755 });
  }
  await writeFile(join(o.sbin, "apt-get"), `#!/bin/sh
# apt-get of a simulated VM whose image has no Proxmox VE (test/pve-sim/sim-reboot.ts).
echo "apt-get $*" >> ${q(join(o.root, "apt.log"))}
case " $* " in
  *" install "*"proxmox-default-kernel"*)
    mkdir -p /var/lib/sim-pve && : > /var/lib/sim-pve/kernel
    echo "Setting up proxmox-default-kernel: boot it to use it" ;;
  *" install "*"proxmox-ve"*)
    [ "$(cat /run/sim-kernel 2>/dev/null)" = pve ] || { echo "E: proxmox-ve: the running kernel is not the PVE kernel (reboot into it first)" >&2; exit 100; }
    mkdir -p /etc/pve/local && cp ${q(join(s, "pve-ssl.pem"))} /etc/pve/local/pve-ssl.pem
    mkdir -p /var/lib/vz/snippets /var/lib/vz/template/iso
    cp ${q(join(s, "sbin"))}/* /usr/local/sbin/
    setsid ${o.relayCmd} </dev/null >/dev/null 2>&1 &
    echo "Setting up proxmox-ve: pveproxy started" ;;
  *) echo "E: Unable to locate package $*" >&2; exit 100 ;;
esac
`, { mode: 0o755 });
}

/** Every process in the VM's network namespace. */
async function vmPids(netns: string): Promise<number[]> {
  const out = await run("ip", ["netns", "pids", netns]).then((r) => r.stdout, () => "");
  return out.split(/\s+/).filter(Boolean).map(Number);
}

/**
 * The shutdown half of a reboot: SIGTERM to every process in the VM, SIGKILL
 * to what is left after `stopMs` (systemd's DefaultTimeoutStopSec).
 */
export async function shutdownVm(netns: string, stopMs = 10_000): Promise<void> {
  for (const pid of await vmPids(netns)) { try { process.kill(pid, "SIGTERM"); } catch { /* gone */ } }
  const deadline = Date.now() + stopMs;
  while (Date.now() < deadline && (await vmPids(netns)).length > 0) await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 50; i++) {
    const left = await vmPids(netns);
    if (left.length === 0) return;
    for (const pid of left) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
    await new Promise((r) => setTimeout(r, 20)); // let the kernel reap before listing again
  }
}

/** What each running VM runs at boot (set by startVmGuest; a reboot runs it again). */
export const bootScripts = new WeakMap<object, string>();

/** Boots the VM's namespaces with `script` (ends in exec sshd); resolves once sshd listens. */
export async function bootVm(netns: string, script: string, vmid: number): Promise<ChildProcess> {
  const sshd = spawn("ip", ["netns", "exec", netns, "unshare", "-m", "-u", "--propagation", "private", "sh", "-c", script], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  try {
    await waitSshd(sshd, vmid);
  } catch (e) {
    sshd.kill("SIGKILL");
    throw e;
  }
  return sshd;
}

/** Resolves once the VM's sshd (its boot's last exec) says it listens; bounded. */
export async function waitSshd(sshd: ChildProcess, vmid: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let err = "";
    const t = setTimeout(() => reject(new Error(`VM ${vmid} sshd did not start: ${err}`)), 20_000);
    sshd.stderr!.setEncoding("utf8").on("data", (d: string) => {
      err += d;
      if (err.includes("Server listening")) { clearTimeout(t); resolve(); }
    });
    sshd.on("exit", (c) => { clearTimeout(t); reject(new Error(`VM ${vmid} sshd exited ${c}: ${err}`)); });
  });
  sshd.removeAllListeners("exit");
  sshd.stderr!.resume();
}

/** Which image a VM was made from: its clone source's imported image, else that template's name without -tmpl. */
export function vmImage(vm: { config: Record<string, string> }, sim: { vms: Map<number, { config: Record<string, string> }>; imports: readonly { vmid: number; file: string }[] }): string {
  const src = Number(/base-(\d+)-disk/.exec(vm.config.scsi0 ?? "")?.[1] ?? NaN);
  const imported = sim.imports.find((i) => i.vmid === src)?.file;
  if (imported) return imported.split("/").pop()!.replace(/\.[^.]+$/, "");
  return (sim.vms.get(src)?.config.name ?? "").replace(/-tmpl$/, "");
}
