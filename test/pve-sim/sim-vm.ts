// The simulator's "VM" guests for real-process tests: a started VM becomes a
// network namespace (eth0 enslaved to a bridge named like the node's, its own
// address, default route to the node) plus a private mount and UTS namespace
// in which /etc, /opt, /usr/local and /var/lib are overlays of the host's
// (writes land in the VM's root dir), /run and /sys/module are fresh, /root is
// the VM's own (Debian's stock dotfiles: every SSH session's bash reads root's
// .bashrc, and the host's may run anything), and the hostname is the level's. Its OpenSSH listens on <address>:22, so the pve
// provider reaches it exactly as it reaches a real VM: agent address, port 22,
// paths at "/". Test-only; used by pve-sim.ts when `vmNetwork` is set.
//
// cloud-init's part of a boot (the user-data's runcmd, the CD-ROMs it mounts) is
// sim-cloud-init.ts's.
//
// When the VM is itself a PVE node (`node`: the simulator standing in for its
// PVE), the VM also gets what a PVE install would leave: /etc/pve/local/pve-ssl.pem,
// /etc/hosts naming it, pveum/pvesm/pvecm/qm (shims to that simulator) in
// /usr/local/sbin, and its API on 127.0.0.1:8006 (a TCP relay to the simulator).
// A VM whose image lacks PVE gets these only from its install, and a VM whose
// simulator can reboot it restarts as a machine does (sim-reboot.ts).

import { spawn, execFile, execFileSync, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { mkdir, readFile, writeFile, chmod, copyFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fakeSystemctlScript, shq as q } from "./fake-systemctl.js";
import { bootLines, bootScripts, stagePveInstall, systemctlCases, waitSshd } from "./sim-reboot.js";
import { bridgeAddArgs } from "./sim-bridge.js";
import { cloudInitBootLines, fakeCloudInit, fakeMount, stageCloudInit } from "./sim-cloud-init.js";

const run = promisify(execFile);
const SHIM = fileURLToPath(new URL("./sim-shim.mjs", import.meta.url));

export interface VmNetwork {
  /** Bridge name at every level (the node's pve.bridge). */
  readonly bridge: string;
  /** Network namespace holding the bridge the VM plugs into; undefined = this host's. */
  netns?: string;
  /** First three octets of the /24 shared by every level, e.g. "10.78.5". */
  readonly prefix: string;
  /** The host end (default route of every VM), e.g. "10.78.5.1". */
  readonly gateway: string;
  /** Hands out host numbers in the /24 (shared by every simulator on the segment). */
  readonly alloc: { next: number };
  /** Unique per test run: prefix of namespace and link names. */
  readonly tag: string;
  /** No default route in the VMs: they reach the bridge's /24 and nothing else (no internet, no host address outside it). */
  readonly isolated?: boolean;
}

/** What a VM that is itself a PVE node needs from the simulator standing in for its PVE. */
export interface VmNode {
  readonly node: string;
  readonly certFile: string;
  readonly apiHost: string;
  readonly apiPort: number;
  readonly controlUrl: string;
  readonly domain: string;
}

export interface SimVmGuest {
  readonly vmid: number;
  readonly root: string;
  readonly netns: string;
  readonly address: string;
  readonly hostLink: string;
  readonly hostLinkNetns?: string;
  readonly sshd: ChildProcess;
  /** The VM's "/" as the host sees it (its mount namespace's root, through /proc). */
  readonly fsRoot: string;
}

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** systemctl of a simulated VM: hsd.service's ExecStart as a background process, as systemd would run it. */
function fakeSystemctl(root: string, extraCases?: string): string {
  return fakeSystemctlScript({
    ...(extraCases ? { extraCases } : {}),
    setup: "unit=/etc/systemd/system/hsd.service\npidf=/run/hsd-service.pid",
    logFile: q(join(root, "systemctl.log")),
    start: `  cmd=$(sed -n 's/^ExecStart=//p' "$unit")
  # RuntimeDirectory=hsd, StateDirectory=hsd, UMask=0077, systemd's PATH.
  mkdir -p -m 0700 /run/hsd /var/lib/hsd
  umask 077
  # Type=notify: start returns once hsd is ready and fails if it never is, as systemd's does.
  # hsd's ready line comes through a FIFO (HSD_READY_FD) where systemd has NOTIFY_SOCKET.
  f=/run/hsd-notify.fifo; rm -f "$f"; mkfifo "$f"
  # systemd's clean environment, whoever asked for the start (an SSH session, cloud-init, the boot).
  env -i PATH=${PATH} NODE_ENV=production HSD_READY_FD=3 setsid sh -c "exec $cmd" 3>"$f" </dev/null >>${q(join(root, "hsd.log"))} 2>&1 &
  echo $! > "$pidf"
  IFS= read -r line < "$f"; rm -f "$f"
  case "$line" in '{"error"'*|'') echo "Job for hsd.service failed because the control process exited with error code." >&2; exit 1 ;; esac`,
  });
}

/** A TCP relay 127.0.0.1:8006 -> the simulator: "pveproxy" on the VM. */
const RELAY = `const net=require("net");const [h,p]=process.argv.slice(1);
net.createServer((c)=>{const u=net.connect(Number(p),h);c.pipe(u);u.pipe(c);c.on("error",()=>u.destroy());u.on("error",()=>c.destroy());}).listen(8006,"127.0.0.1");`;

async function ip(args: string[]): Promise<void> {
  await run("ip", args, { timeout: 20_000 });
}

export async function startVmGuest(o: {
  vmid: number; name: string; root: string; sshkeys: string; net: VmNetwork; node?: VmNode;
  /** Its image has no PVE: `node` is what its install makes of it (sim-reboot.ts). */
  pveAbsent?: boolean;
  /** The owning simulator's control endpoint: `systemctl reboot` in the VM reboots it. */
  owner?: { controlUrl: string };
  /** Its cloud-init user-data (the cicustom snippet): the first boot runs its runcmd (sim-cloud-init.ts). */
  userData?: string;
}): Promise<SimVmGuest> {
  const { root, net } = o;
  const hostname = o.name.replace(/^hsd-/, "").replace(/[^a-z0-9-]/g, "-") || "vm";
  // Named by host number: vmids repeat across the simulated nodes, addresses do not.
  const host = net.alloc.next++;
  const address = `${net.prefix}.${host}`;
  const ns = `${net.tag}-${host}`;
  const hostLink = `${net.tag}v${host}`.slice(0, 15);
  const up = (d: string) => join(root, "upper", d);
  for (const d of ["etc", "opt", "usr/local", "var/lib"]) {
    await mkdir(up(d), { recursive: true });
    await mkdir(join(root, "work", d), { recursive: true });
  }
  // The VM's /var/lib/vz is its own disk's, never the host's (a PVE host's, or an image a test
  // left there): hidden by a whiteout until PVE's install makes one (overlayfs makes that
  // directory opaque), and once there, bind-mounted over the merged view at every boot.
  const vz = join(up("var/lib"), "vz");
  if ((!o.node || o.pveAbsent) && !existsSync(vz)) execFileSync("mknod", [vz, "c", "0", "0"]);
  // cloud-init's work: root's keys, the hostname in /etc/hosts (manage_etc_hosts).
  const sshDir = join(root, ".sshd");
  await mkdir(sshDir, { recursive: true });
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(sshDir, "host")]);
  const keys = decodeURIComponent(o.sshkeys).split("\n").map((l) => l.trim()).filter(Boolean);
  await writeFile(join(sshDir, "authorized_keys"), `${keys.join("\n")}\n`, { mode: 0o600 });
  await writeFile(join(sshDir, "sshd_config"), [
    "ListenAddress 0.0.0.0:22", `HostKey ${join(sshDir, "host")}`, `AuthorizedKeysFile ${join(sshDir, "authorized_keys")}`,
    `PidFile ${join(sshDir, "sshd.pid")}`, "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
    "PasswordAuthentication no", "KbdInteractiveAuthentication no", `SetEnv PATH=${PATH}`, "",
  ].join("\n"));
  const hosts = await readFile("/etc/hosts", "utf8").catch(() => "127.0.0.1 localhost\n");
  const domain = o.node?.domain ?? "lab.example";
  await writeFile(join(up("etc"), "hosts"), `${hosts.replace(/\n?$/, "\n")}${address} ${hostname}.${domain} ${hostname}\n`);
  const sbin = join(up("usr/local"), "sbin");
  await mkdir(sbin, { recursive: true });
  await writeFile(join(sbin, "systemctl"), fakeSystemctl(root, o.owner ? systemctlCases({ controlUrl: o.owner.controlUrl, vmid: o.vmid }) : undefined), { mode: 0o755 });
  await stageCloudInit(root, o.userData);
  await writeFile(join(sbin, "cloud-init"), fakeCloudInit(root), { mode: 0o755 });
  await writeFile(join(sbin, "mount"), fakeMount(root), { mode: 0o755 });
  await writeFile(join(sbin, "fuser"), "#!/bin/sh\nexit 1\n", { mode: 0o755 });
  const relayCmd = o.node ? `${q(process.execPath)} -e ${q(RELAY)} ${q(o.node.apiHost)} ${String(o.node.apiPort)}` : undefined;
  if (o.node && o.pveAbsent) {
    await stagePveInstall({ root, sbin, certFile: o.node.certFile, controlUrl: o.node.controlUrl, relayCmd: relayCmd! });
  } else if (o.node) {
    await mkdir(join(up("etc"), "pve/local"), { recursive: true });
    await copyFile(o.node.certFile, join(up("etc"), "pve/local/pve-ssl.pem"));
    // What a PVE install leaves in `local` (/var/lib/vz): its snippets and iso directories.
    for (const d of ["snippets", "template/iso"]) await mkdir(join(up("var/lib"), "vz", d), { recursive: true });
    for (const cmd of ["pveum", "pvesm", "pvecm", "qm"]) {
      await writeFile(join(sbin, cmd), `#!/bin/sh\nexec ${q(process.execPath)} ${q(SHIM)} ${q(o.node.controlUrl)} ${cmd} "$@"\n`, { mode: 0o755 });
    }
  }
  // root's home as a fresh Debian has it (base-files' dot.bashrc and dot.profile), kept across reboots.
  const home = join(root, "home-root");
  await mkdir(home, { recursive: true, mode: 0o700 });
  for (const f of ["bashrc", "profile"]) await copyFile(`/usr/share/base-files/dot.${f}`, join(home, `.${f}`)).catch(() => {});
  await chmod(root, 0o755);

  // The NIC: a veth whose far end is eth0 in the VM, enslaved to the VM's own bridge (a PVE node's layout).
  await ip(["netns", "add", ns]);
  try {
    await ip(["link", "add", hostLink, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    if (net.netns) await ip(["link", "set", hostLink, "netns", net.netns]);
    const at = net.netns ? ["-n", net.netns] : [];
    await ip([...at, "link", "set", hostLink, "master", net.bridge, "up"]);
    for (const a of [
      ["link", "set", "lo", "up"], bridgeAddArgs(net.bridge), ["link", "set", "eth0", "master", net.bridge, "up"],
      ["addr", "add", `${address}/24`, "dev", net.bridge], ["link", "set", net.bridge, "up"],
      ...(net.isolated ? [] : [["route", "add", "default", "via", net.gateway]]),
    ]) await ip(["-n", ns, ...a]);
  } catch (e) {
    await ip([...(net.netns ? ["-n", net.netns] : []), "link", "del", hostLink]).catch(() => {});
    await ip(["link", "del", hostLink]).catch(() => {});
    await ip(["netns", "del", ns]).catch(() => {});
    throw e;
  }

  const overlays = ["etc", "opt", "usr/local", "var/lib"].map((d) =>
    `mount -t overlay overlay -o lowerdir=/${d},upperdir=${q(up(d))},workdir=${q(join(root, "work", d))} /${d}`);
  const script = [
    "set -e",
    `echo ${q(hostname)} > /proc/sys/kernel/hostname`,
    ...overlays,
    `if [ -d ${q(vz)} ]; then mount --bind ${q(vz)} /var/lib/vz; fi`,
    `mount --bind ${q(home)} /root`,
    "mount -t tmpfs -o mode=0755 tmpfs /run", "mkdir -p /run/sshd",
    "mount -t tmpfs tmpfs /sys/module", "mkdir -p /sys/module/kvm_intel/parameters", "echo Y > /sys/module/kvm_intel/parameters/nested",
    // pveproxy when PVE is installed, hsd when enabled (a first boot has neither enabled yet).
    ...bootLines(relayCmd),
    // cloud-init's final stage, once per instance: the user-data's runcmd.
    ...cloudInitBootLines(root, PATH),
    `exec /usr/sbin/sshd -D -e -f ${q(join(sshDir, "sshd_config"))}`,
  ].join("\n");
  const sshd = spawn("ip", ["netns", "exec", ns, "unshare", "-m", "-u", "--propagation", "private", "sh", "-c", script], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  // ip netns exec, unshare and sh all exec in place: sshd's pid lives in the VM's mount namespace.
  const guest: SimVmGuest = { vmid: o.vmid, root, netns: ns, address, hostLink, hostLinkNetns: net.netns, sshd, fsRoot: `/proc/${sshd.pid}/root` };
  try {
    await waitSshd(sshd, o.vmid);
  } catch (e) {
    await stopVmGuest(guest);
    throw e;
  }
  bootScripts.set(guest, script);
  return guest;
}

/** Power-off: every process in the VM dies at once, its NIC and namespace go. */
export async function stopVmGuest(g: SimVmGuest): Promise<void> {
  const killed = new Set<number>();
  for (let i = 0; i < 50; i++) {
    const pids = (await run("ip", ["netns", "pids", g.netns]).then((r) => r.stdout, () => "")).split(/\s+/).filter(Boolean).map(Number);
    if (pids.length === 0) break;
    for (const pid of pids) { killed.add(pid); try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
    await new Promise((r) => setTimeout(r, 20)); // let the kernel reap before listing again
  }
  // A dying process leaves the namespace before it has exited (a loaded host
  // shows the gap): powered off means every one of them is gone or a zombie.
  const deadline = Date.now() + 10_000;
  for (const pid of killed) {
    while (Date.now() < deadline && await running(pid)) await new Promise((r) => setTimeout(r, 20));
  }
  await ip([...(g.hostLinkNetns ? ["-n", g.hostLinkNetns] : []), "link", "del", g.hostLink]).catch(() => {});
  await ip(["netns", "del", g.netns]).catch(() => {});
}

/** Whether pid is a process that has not exited yet (neither gone nor a zombie). */
async function running(pid: number): Promise<boolean> {
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const state = /^State:\s+(\w)/m.exec(status)?.[1];
  return state !== undefined && state !== "Z" && state !== "X";
}

/** Namespaces of this run still present (for the test's leak check and cleanup). */
export function runNetns(tag: string): string[] {
  return execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n").map((l) => l.split(" ")[0]!).filter((n) => n.startsWith(`${tag}-`));
}

export async function removeRoot(root: string): Promise<void> {
  await rm(root, { recursive: true, force: true });
}
