// A tree of simulated PVE nodes run by real processes, for the pve e2e tests
// (nest-pve-e2e.test.ts, nest-pve-images-e2e.test.ts, nest-pve-manifest-e2e.test.ts): one host bridge, one
// simulator per level (level 0's node "pve1", then "l1", "l2", ... each the
// node of VM hsd-l<N> on the level above; or named as a manifest's nodes), and level 0's `hsd run` on its
// "PVE node". Test-only: imported by test/pve/*.test.ts, test/guest/nest-pve-guest.guest.ts.
//
// Why it keeps the provider honest (it runs on its defaults: the guest agent's
// address, SSH port 22, system paths at "/"):
// - Level 0 is `hsd run --root DIR` inside a mount + UTS namespace standing in
//   for PVE node "pve1": hostname pve1, /etc an overlay holding /etc/hosts and
//   /etc/pve/local/pve-ssl.pem (the simulator's certificate), /sys/module
//   showing kvm_intel nested=Y. Its host commands are real executables on PATH
//   (test/pve-sim/sim-shim.mjs: pvesm/pveum/pvecm/qm ask the simulator's
//   control endpoint); `ip` is the real one against a real bridge.
// - The host bridge (random name and 10.79.N.0/24) is every level's pve.bridge;
//   the simulators' API listen on its address. A started VM (sim-vm.ts) is a
//   network namespace with eth0 on that bridge and its own bridge of the same
//   name, and a mount namespace where /etc, /opt, /usr/local and /var/lib are
//   overlays, running a real sshd on <addr>:22; its fake systemctl runs
//   hsd.service's ExecStart, i.e. the bundled hsd the provider installed.
// - Levels below 0 are PVE nodes too: each has its own simulator (no token
//   yet) behind 127.0.0.1:8006 in its VM, its cert in /etc/pve/local, pveum &
//   co. in /usr/local/sbin, and its `local` storage is the VM's own /var/lib/vz
//   (sim-node-fs.ts): what that level's hsd writes there is what its PVE finds.
// Product seam used: hsd.yaml pve.bundle (where the bundle comes from).

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { access, mkdtemp, mkdir, writeFile, readFile, rm, copyFile, open } from "node:fs/promises";
import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { PveSim, type PveSimOptions } from "../pve-sim/pve-sim.js";
import { runNetns, type VmNetwork } from "../pve-sim/sim-vm.js";
import { bridgeAddArgs } from "../pve-sim/sim-bridge.js";
import { buildBundle, type BundleFixture } from "./bundle-fixture.js";
import type { QemuGuests } from "../pve-sim/sim-qemu.js";
import { startDhcp, type Dhcp } from "../guest/guest-lan.js";
import { hsctl, hsdProcessesUnder, HSD } from "../helpers/hsctl.js";
import { readyFromPipe } from "../../src/util/ready-pipe.js";
import { keepTreeLogs } from "./tree-logs.js";

const SHIM = fileURLToPath(new URL("../pve-sim/sim-shim.mjs", import.meta.url));
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** An image level 0 holds: random bytes of this size, in level 0's iso directory. */
export interface TreeImage { readonly name: string; readonly bytes: number; /** Written into images: (else hsd computes it). */ readonly pinSha256?: boolean }

export interface PveTreeOptions {
  /** Levels below 0, each a PVE node with its own simulator. */
  readonly depth: number;
  /** Level 0's images (images: in its hsd.yaml, files in node pve1's iso directory). None: no images: section. */
  readonly images?: readonly TreeImage[];
  /** Level 0's pve.image (what its children, and theirs, are made from; a list: one per depth below). */
  readonly image?: string | readonly string[];
  /**
   * Which nodes start with an operator's template at 9000: every node ("all",
   * the default: a tree without images), node pve1 only ("level0"), or none
   * (level 0 makes its own from pve.image). A node without one has only what hsd made.
   */
  readonly presetTemplates?: "all" | "level0" | "none";
  /** Temp dir prefix. */
  readonly prefix: string;
  /** The names of the levels below 0, top down (a manifest's PVE nodes); default l1, l2, ... */
  readonly names?: readonly string[];
  /** More keys for level 0's hsd.yaml (configure steps, ...). */
  readonly extraConfig?: Readonly<Record<string, unknown>>;
  /** The simulators' PVE-time multiplier (default theirs, 0.01; 1 plays PVE's own durations). */
  readonly timeScale?: number;
  /**
   * Every level's VMs are real QEMU guests (test/pve-sim/sim-qemu.ts, issue 18), all with
   * a tap on the one host bridge (a nested VM as one bridged to its node's LAN); the bridge
   * gets a DHCP server (hsd asks ipconfig0=ip=dhcp) and the bundle carries node.
   */
  readonly qemuGuests?: QemuGuests;
  /** The VMs get no default route (sim-vm.ts VmNetwork.isolated): nothing outside the bridge's /24 is reachable. */
  readonly isolatedVms?: boolean;
  /** More options for the simulator of level n (0: pve1), e.g. which of its templates' images lack PVE (sim-reboot.ts). */
  readonly simOptions?: (level: number) => Partial<PveSimOptions>;
}

export interface PveTree {
  readonly root: string;
  /** Level 0's root (HSD_ROOT). */
  readonly l0: string;
  readonly env: Record<string, string>;
  /** sims[0] is level 0's node (pve1); sims[n] the node of level n (VM hsd-l<n> on sims[n-1]). */
  readonly sims: readonly PveSim[];
  readonly tag: string;
  readonly level0: ChildProcess;
  /** The images' contents and sha256, by name. */
  readonly images: ReadonlyMap<string, { data: Buffer; sha256: string }>;
  /** hsd pids seen while the tree was up (level 0's and any the test adds). */
  readonly hsdPids: number[];
  /** Tests that failed on this tree (tree-logs.ts keepLogsOnFailure): close() keeps every level's log then. */
  readonly failed: string[];
  /** Destroys what is left, kills every process, removes namespaces, the bridge and the temp dirs. */
  close(): Promise<void>;
  /** The DHCP server's log (qemuGuests), for failure messages. */
  dhcpLog(): Promise<string>;
}

export function alive(pid: number): boolean {
  try {
    const st = execFileSync("cat", [`/proc/${pid}/status`], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return !/^State:\s+Z/m.test(st);
  } catch { return false; }
}

export async function startPveTree(o: PveTreeOptions): Promise<PveTree> {
  const tag = `hp${randomBytes(2).toString("hex")}`;
  const bridge = `${tag}br`;
  const prefix = `10.79.${randomBytes(1)[0]! % 250}`;
  const gateway = `${prefix}.1`;
  const alloc = { next: 10 };
  const net = (): VmNetwork => ({ bridge, prefix, gateway, alloc, tag, ...(o.isolatedVms ? { isolated: true } : {}) });
  const root = await mkdtemp(join(tmpdir(), o.prefix));
  const l0 = join(root, "l0");
  const sims: PveSim[] = [];
  const hsdPids: number[] = [];
  let bundle: BundleFixture | undefined;
  let bridgeMade = false;
  let dhcp: Dhcp | undefined;
  let level0: ChildProcess | undefined;
  const images = new Map<string, { data: Buffer; sha256: string }>();
  const failed: string[] = [];

  const close = async () => {
    // Before destroy: it stops the levels, and their last lines are the ones that tell.
    if (failed.length > 0) await keepTreeLogs({ l0, sims, failed }, `failed: ${failed.join("; ")}`).catch(() => undefined);
    if (level0?.exitCode === null) await hsctl(["destroy", "--json"], { HSD_ROOT: l0 }, 90_000).catch(() => undefined);
    for (const pid of [...hsdPids, ...await hsdProcessesUnder(root)]) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
    if (level0 && level0.exitCode === null && level0.signalCode === null) level0.kill("SIGKILL");
    for (const s of [...sims].reverse()) await s.close().catch(() => undefined);
    for (const ns of runNetns(tag)) {
      try { execFileSync("ip", ["netns", "del", ns]); } catch { /* gone */ }
    }
    await dhcp?.close();
    if (bridgeMade) { try { execFileSync("ip", ["link", "del", bridge]); } catch { /* gone */ } }
    await bundle?.close();
    await rm(root, { recursive: true, force: true });
  };

  try {
    bundle = await buildBundle({ withNode: !!o.qemuGuests });
    execFileSync("ip", bridgeAddArgs(bridge));
    bridgeMade = true;
    execFileSync("ip", ["addr", "add", `${gateway}/24`, "dev", bridge]);
    execFileSync("ip", ["link", "set", bridge, "up"]);
    if (o.qemuGuests) dhcp = await startDhcp(bridge, prefix);
    // Deepest first: a VM learns its node's address and certificate when it starts.
    let below: PveSim | undefined;
    const levelName = (n: number) => o.names?.[n - 1] ?? `l${n}`;
    for (let n = o.depth; n >= 0; n--) {
      const child = below;
      const sim = new PveSim({
        node: n === 0 ? "pve1" : levelName(n), host: gateway, bridges: [bridge], vmNetwork: net(),
        ...(o.timeScale !== undefined ? { timeScale: o.timeScale } : {}),
        nodeFor: (name) => (child && name === `hsd-${levelName(n + 1)}` ? child : undefined),
        presetTemplate: (o.presetTemplates ?? "all") === "all" || (n === 0 && o.presetTemplates === "level0"),
        ...(o.qemuGuests ? { qemuGuests: o.qemuGuests } : {}),
        ...(n > 0 ? { presetToken: false, vmFs: true } : {}),
        ...o.simOptions?.(n),
      });
      await sim.start();
      sims.unshift(sim);
      below = sim;
    }
    const sim0 = sims[0]!;
    const isoDir = join(sim0.paths.vz, "template", "iso");
    for (const img of o.images ?? []) {
      const data = randomBytes(img.bytes);
      await writeFile(join(isoDir, `${img.name}.img`), data);
      images.set(img.name, { data, sha256: createHash("sha256").update(data).digest("hex") });
    }
    const imagesYaml = o.images ? {
      image_dir: isoDir,
      images: Object.fromEntries(o.images.map((i) => [i.name, i.pinSha256 ? { sha256: images.get(i.name)!.sha256 } : {}])),
    } : {};
    const started = await startLevel0({
      root, l0, sim: sim0, gateway, bridge, bundlePath: bundle.path, extra: { ...imagesYaml, ...o.extraConfig }, image: o.image,
    });
    level0 = started.proc;
    hsdPids.push(started.pid);
  } catch (e) {
    failed.push(`start: ${(e as Error).message}`);
    await close();
    throw e;
  }
  return { root, l0, env: { HSD_ROOT: l0 }, sims, tag, level0: level0!, images, hsdPids, failed, close, dhcpLog: () => dhcp?.log() ?? Promise.resolve("") };
}

/** Level 0 on its "PVE node": see the header. Resolves once it is ready (its readiness pipe). */
async function startLevel0(o: {
  root: string; l0: string; sim: PveSim; gateway: string; bridge: string; bundlePath: string; extra: Record<string, unknown>; image?: string | readonly string[];
}): Promise<{ proc: ChildProcess; pid: number }> {
  const { root, l0, sim } = o;
  const etc = join(root, "node0", "etc");
  await mkdir(join(etc, "pve/local"), { recursive: true });
  await mkdir(join(root, "node0", "work"), { recursive: true });
  await copyFile(sim.paths.certFile, join(etc, "pve/local/pve-ssl.pem"));
  const hosts = await readFile("/etc/hosts", "utf8");
  await writeFile(join(etc, "hosts"), `${hosts.replace(/\n?$/, "\n")}${o.gateway} ${sim.node}.${sim.domain} ${sim.node}\n`);
  const bin = join(root, "node0", "bin");
  await mkdir(bin, { recursive: true });
  for (const cmd of ["pveum", "pvesm", "pvecm", "qm"]) {
    await writeFile(join(bin, cmd), `#!/bin/sh\nexec ${q(process.execPath)} ${q(SHIM)} ${q(sim.controlUrl)} ${cmd} "$@"\n`, { mode: 0o755 });
  }
  await mkdir(l0, { recursive: true, mode: 0o700 });
  await writeFile(join(l0, "hsd.yaml"), stringify({
    level: { name: "l0" },
    ssh: { host: "0.0.0.0", port: 0, advertise_host: o.gateway },
    nest: { provider: "pve" },
    pve: {
      url: sim.url, node: sim.node, token_id: sim.tokenId, fingerprint: sim.fingerprint, storage: "local-lvm",
      snippet_storage: "local", template: sim.templateVmid, bridge: o.bridge, cores: 2, memory: 2048, bundle: o.bundlePath,
      ...(o.image ? { image: o.image } : {}),
    },
    ...o.extra,
  }), { mode: 0o600 });
  await writeFile(join(l0, "secrets.yaml"), stringify({ pve: { token_secret: sim.tokenSecret } }), { mode: 0o600 });
  const script = [
    "set -e",
    `echo ${q(sim.node)} > /proc/sys/kernel/hostname`,
    `mount -t overlay overlay -o lowerdir=/etc,upperdir=${q(etc)},workdir=${q(join(root, "node0", "work"))} /etc`,
    "mount -t tmpfs tmpfs /sys/module", "mkdir -p /sys/module/kvm_intel/parameters", "echo Y > /sys/module/kvm_intel/parameters/nested",
    `exec ${q(process.execPath)} ${q(HSD)} run --root ${q(l0)}`,
  ].join("\n");
  const log = await open(join(l0, "hsd.log"), "a", 0o600);
  const proc = spawn("unshare", ["-m", "-u", "--propagation", "private", "sh", "-c", script], {
    stdio: ["ignore", log.fd, log.fd, "pipe"],
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}`, HSD_READY_FD: "3", HSD_LOG_PRETTY: "" },
  });
  await log.close();
  const ready = await readyFromPipe(proc, AbortSignal.timeout(60_000), () => readFile(join(l0, "hsd.log"), "utf8").catch(() => ""));
  return { proc, pid: ready.pid };
}

/** The VM named hsd-<level> on a simulator. */
export function vmNamed(sim: PveSim, level: string) {
  return [...sim.vms.values()].find((v) => v.config.name === `hsd-${level}`);
}

/** Resolves once level 0's hsd has exited (it stops itself after destroy), within 15 s. */
export async function level0Exited(t: PveTree): Promise<void> {
  const p = t.level0;
  await new Promise<void>((resolve, reject) => {
    if (p.exitCode !== null || p.signalCode !== null) { resolve(); return; }
    const timer = setTimeout(() => {
      void readFile(join(t.l0, "hsd.log"), "utf8").catch(() => "").then((log) =>
        reject(new Error(`level 0 hsd did not exit within 15 s of destroy; its log ends:\n${log.split("\n").slice(-15).join("\n")}`)));
    }, 15_000);
    p.once("exit", () => { clearTimeout(timer); resolve(); });
  });
}

/** The hsd running in a VM: its pid from the ready.json it wrote (checked alive, recorded for cleanup). */
export async function vmHsdPid(t: PveTree, sim: PveSim, vmid: number): Promise<number> {
  const rd = JSON.parse(await readFile(join(sim.guestRoot(vmid), "upper/var/lib/hsd/run/ready.json"), "utf8")) as { pid: number };
  t.hsdPids.push(rd.pid);
  return rd.pid;
}

/**
 * `hsctl destroy` of the whole tree, then what every pve e2e expects of it:
 * the stream ends well, every power-off is done, level 0 has exited, and no
 * VM namespace, hsd process or API socket is left. (Which VMs and templates
 * each node keeps is the caller's to check.)
 */
export async function destroyTree(t: PveTree, timeoutMs = 120_000): Promise<void> {
  const d = await hsctl(["destroy", "--json"], t.env, timeoutMs);
  assert.equal(d.code, 0, `${d.stderr}\n${d.stdout.slice(-3000)}`);
  await Promise.all(t.sims.map((s) => s.settled()));
  // Level 0 stops itself once the destroy stream has ended: wait for its exit, bounded.
  await level0Exited(t);
  assert.deepEqual(runNetns(t.tag), []);
  assert.deepEqual(t.hsdPids.filter(alive).map((p) => `${p}: ${execFileSync("cat", [`/proc/${p}/cmdline`], { encoding: "utf8" })}`), []);
  assert.deepEqual(await hsdProcessesUnder(t.root), []);
  await assert.rejects(access(join(t.l0, "run", "hsd.sock")));
}
