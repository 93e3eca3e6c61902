// A faithful, stateful PVE API simulator over real HTTPS, built to
// /work/shared/pve-api.md: envelopes, error texts and statuses, 401 delays,
// 501 for unknown routes, 596 after pveproxy's 30 s, UPIDs and tasks; every
// request checked against PVE's schema of its release (400 with PVE's errors).
// Test-only. Durations are PVE milliseconds multiplied by `timeScale`.

import * as https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID, createHash } from "node:crypto";
import { makeSimCert, type SimCert } from "./sim-cert.js";
import { bootScripts, bootVm, shutdownVm, vmImage } from "./sim-reboot.js";
import { buildRoutes, type Route } from "./pve-sim-api.js";
import { validateRequest } from "./pve-schema-check.js";
import { formatUpid } from "../../src/providers/pve/upid.js";
import { startGuest, stopGuest, type SimGuest } from "./sim-guest.js";
import { startVmGuest, stopVmGuest, type SimVmGuest, type VmNetwork, type VmNode } from "./sim-vm.js";
import { cdromVolumes, unpackCdroms } from "./sim-cloud-init.js";
import { simCommandRunner } from "./sim-commands.js";
import { startQemuVm, stopQemuVm, shutdownQemuVm, qemuSnippet, qemuGuestAddress, type QemuGuests, type SimQemuVm } from "./sim-qemu.js";
import type { QgaChannel } from "./sim-qga.js";
import * as http from "node:http";
import { SimNodeFs, VM_VZ } from "./sim-node-fs.js";

export interface SimFaults {
  /** Storage `local` starts without `snippets` in its content list. */
  snippetsDisabled: boolean;
  /** PVE ms from VM start until the guest agent answers. */
  agentDelayMs: number;
  /** PVE ms a clone task runs (the new VM holds lock: clone meanwhile). */
  cloneMs: number;
  /** A clone task ends with this error (e.g. the storage lock's timeout) and its VM's config is removed; "" = it succeeds. */
  cloneError: string;
  /** PVE ms other tasks run. */
  taskMs: number;
  /** "METHOD /template" -> PVE ms of synchronous work; above 30 s pveproxy answers 596. */
  slowSync: Record<string, { ms: number; times?: number }>;
  /** The next n nextid answers are taken by a "concurrent caller" before the clone. */
  nextidCollisions: number;
  /** pve-ssl.pem has a zone-id SAN and pveproxy is down. */
  certZoneId: boolean;
  /** Status queries answering 400 `no such task` for each fresh UPID. */
  freshTaskMisses: number;
  /** /sys/module/kvm_intel/parameters/nested content. */
  nested: "Y" | "N";
  /** Free KiB reported by `pvesm status` and the storage status API. */
  diskFreeKiB: number;
}

/** Every simulated storage's size in KiB (what `pvesm status` and the storage status API report as total). */
export const SIM_STORAGE_TOTAL_KIB = 100_000_000;

export interface SimVm {
  vmid: number;
  config: Record<string, string>;
  status: "running" | "stopped";
  agentReadyAt?: number;
  /**
   * When the last agent call that PVE failed for a guest agent not yet up
   * returned (each is held ~3 s first): until then a caller was waiting on
   * PVE, not on itself (bench/pve-level-overhead.ts).
   */
  agentFailedUntil?: number;
  startedAt?: number;
}

export interface SimStorage { storage: string; type: string; path?: string; content: string; }

export interface SimTask {
  upid: string; node: string; type: string; id: string; user: string; pid: number; pstart: number; starttime: number;
  status: "running" | "stopped"; exitstatus?: string; log: string[]; misses: number;
  /** Wall-clock ms (Date.now()) the task ran from and to: what a caller waited on PVE for (benches). */
  startedMs: number; endedMs?: number;
}

export interface RecordedRequest {
  method: string; template: string; path: string; status: number;
  /** Query and body parameters merged, path parameters included (as PVE validates them). */
  params?: Record<string, string>;
  /** The schema errors the simulator answered 400 with. */
  schemaErrors?: Record<string, string>;
  /** Wall-clock ms (Date.now()) it arrived and was answered: which requests overlapped. */
  at: number; answeredAt?: number;
}

export interface PveSimOptions {
  node?: string;
  timeScale?: number;
  faults?: Partial<SimFaults>;
  template?: number;
  bridges?: string[];
  /** Images (by name) without PVE: a node VM made from one serves no PVE API until its install (sim-reboot.ts). Default none. */
  imagesWithoutPve?: readonly string[];
  /** Name of the preset template (its image: the name without -tmpl). Default debian-12-tmpl. */
  templateName?: string;
  /** A started VM gets a real sshd and a root directory (sim-guest.ts). */
  guests?: boolean;
  /**
   * Real-process mode (sim-vm.ts): a started VM is a network + mount namespace
   * on this bridge with sshd on <address>:22. Wins over `guests`.
   */
  vmNetwork?: VmNetwork;
  /** With vmNetwork: a started VM is a real QEMU guest on its bridge instead of a namespace (sim-qemu.ts). */
  qemuGuests?: QemuGuests;
  /** For a VM named hsd-<level>: the simulator standing in for that level's own PVE, if it is a node. */
  nodeFor?: (vmName: string) => PveSim | undefined;
  /** Address the API (and the control endpoint) listen on. Default 127.0.0.1. */
  host?: string;
  /** Start with tokenId/tokenSecret already created (a node that hsd did not set up). Default true. */
  presetToken?: boolean;
  /** The PVE release answered by GET /version; parameters newer than it are refused. Default 8.3.2. */
  release?: string;
  /** Start with the operator's template at `template` (a node hsd did not build). Default true. */
  presetTemplate?: boolean;
  /**
   * This node is itself a VM (its parent's nodeFor): `local` is the guest's
   * /var/lib/vz, read through the VM's root once it runs (sim-node-fs.ts).
   */
  vmFs?: boolean;
}

export class SimError extends Error {
  constructor(readonly status: number, message: string, readonly errors?: Record<string, string>) { super(message); }
}

export class PveSim {
  readonly node: string;
  readonly release: string;
  readonly timeScale: number;
  readonly faults: SimFaults;
  readonly tokens = new Map<string, string>();
  readonly vms = new Map<number, SimVm>();
  readonly storages = new Map<string, SimStorage>();
  /** Every disk import this node did (import-from): the file (a path on this node), always under one of its own storages. */
  readonly imports: { vmid: number; file: string }[] = [];
  readonly tasks = new Map<string, SimTask>();
  readonly bridges: Set<string>;
  readonly requests: RecordedRequest[] = [];
  /** The node's host commands (pvesm, pveum, ...) its shims ran, in order. */
  hostCommands: readonly string[] = [];
  /** TLS connections the API accepted (a client that keeps its connection alive makes few). */
  tlsConnections = 0;
  private readonly imagesWithoutPve: readonly string[];
  private readonly templateName: string;
  /** vmid -> reboots the VM went through (`systemctl reboot` in it). */
  readonly reboots = new Map<number, number>();
  readonly guestAddress = (vmid: number) => `10.0.0.${vmid % 200 + 10}`;
  /** The node's own bridge address (what `ip -4 addr` reports). */
  readonly nodeAddress = "10.0.0.2";
  readonly domain = "lab.example";
  root = "";
  tokenId = "root@pam!hsd";
  tokenSecret = randomUUID();
  cert!: SimCert;
  proxyDown = false;
  ipv6Disabled = false;
  private server?: https.Server;
  private port = 0;
  private routes: Route[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly sockets = new Set<Socket>();
  private nextPid = 0x1000;
  readonly templateVmid: number;
  private readonly withGuests: boolean;
  private readonly guests = new Map<number, Promise<SimGuest>>();
  private readonly powerOffs = new Set<Promise<void>>();
  vmNetwork?: VmNetwork;
  /** Why real-process VMs failed to come up. */
  readonly guestErrors: string[] = [];
  private readonly nodeFor?: (vmName: string) => PveSim | undefined;
  private readonly host: string;
  private readonly presetToken: boolean;
  private readonly vmGuests = new Map<number, Promise<SimVmGuest>>();
  private control?: http.Server;
  private readonly qemu?: QemuGuests;
  private readonly qemuVms = new Map<number, Promise<SimQemuVm>>();
  /** Real-guest VMs whose QEMU runs (their agent channel is usable). */
  private readonly qemuUp = new Map<number, SimQemuVm>();
  private controlPort = 0;
  private readonly presetTemplate: boolean;
  /** Where this node's own paths are on the host: the VM's root when it is a VM (sim-node-fs.ts). */
  readonly fs: SimNodeFs;

  constructor(opts: PveSimOptions = {}) {
    this.node = opts.node ?? "pve1";
    this.release = opts.release ?? "8.3.2";
    this.timeScale = opts.timeScale ?? 0.01;
    this.templateVmid = opts.template ?? 9000;
    this.bridges = new Set(opts.bridges ?? ["vmbr0"]);
    this.imagesWithoutPve = opts.imagesWithoutPve ?? [];
    this.templateName = opts.templateName ?? "debian-12-tmpl";
    this.withGuests = opts.guests ?? false;
    this.vmNetwork = opts.vmNetwork;
    this.qemu = opts.qemuGuests;
    this.nodeFor = opts.nodeFor;
    this.host = opts.host ?? "127.0.0.1";
    this.presetToken = opts.presetToken ?? true;
    this.presetTemplate = opts.presetTemplate ?? true;
    this.fs = new SimNodeFs(opts.vmFs ?? false);
    this.faults = {
      snippetsDisabled: false, agentDelayMs: 20_000, cloneMs: 5_000, cloneError: "", taskMs: 1_000, slowSync: {},
      nextidCollisions: 0, certZoneId: false, freshTaskMisses: 1, nested: "Y", diskFreeKiB: 80_000_000,
      ...opts.faults,
    };
  }

  get url(): string { return `https://${this.host}:${this.port}`; }
  get apiPort(): number { return this.port; }
  /** POST {argv} -> {code, stdout, stderr}: the node's host commands (sim-commands.ts), for sim-shim.mjs. */
  get controlUrl(): string { return `http://${this.host}:${this.controlPort}/command`; }
  get fingerprint(): string { return this.cert.fingerprint; }
  get paths() {
    return {
      certDir: join(this.root, "etc/pve/local"), certFile: join(this.root, "etc/pve/local/pve-ssl.pem"),
      hostsFile: join(this.root, "etc/hosts"), sysRoot: join(this.root, "sys"), vz: join(this.root, "var/lib/vz"),
    };
  }

  async start(): Promise<this> {
    this.root = await mkdtemp(join(tmpdir(), "pve-sim-"));
    const p = this.paths;
    await mkdir(join(p.vz, "snippets"), { recursive: true });
    // homestak's images live here (local:iso/<name>.img).
    await mkdir(join(p.vz, "template", "iso"), { recursive: true });
    await mkdir(join(this.root, "etc"), { recursive: true });
    await mkdir(join(p.sysRoot, "module/kvm_intel/parameters"), { recursive: true });
    await writeFile(join(p.sysRoot, "module/kvm_intel/parameters/nested"), `${this.faults.nested}\n`);
    const hostLine = this.faults.certZoneId ? `fe80::1%vmbr0 ${this.node}.${this.domain} ${this.node}` : `${this.nodeAddress} ${this.node}.${this.domain} ${this.node}`;
    await writeFile(p.hostsFile, `127.0.0.1 localhost\n${hostLine}\n`);
    if (this.presetToken) this.tokens.set(this.tokenId, this.tokenSecret);
    this.storages.set("local", {
      storage: "local", type: "dir", path: this.fs.isVm ? VM_VZ : p.vz,
      content: this.faults.snippetsDisabled ? "iso,vztmpl,backup" : "iso,vztmpl,backup,snippets",
    });
    this.storages.set("local-lvm", { storage: "local-lvm", type: "lvmthin", content: "images,rootdir" });
    if (this.presetTemplate) this.vms.set(this.templateVmid, {
      vmid: this.templateVmid, status: "stopped",
      config: {
        name: this.templateName, template: "1", memory: "2048", cores: "1", ostype: "l26", scsihw: "virtio-scsi-pci",
        scsi0: `local-lvm:base-${this.templateVmid}-disk-0,size=3G`, boot: "order=scsi0", serial0: "socket", vga: "serial0",
      },
    });
    await this.installCert(this.faults.certZoneId);
    this.proxyDown = this.faults.certZoneId;
    this.routes = buildRoutes(this);
    const server = https.createServer({ key: this.cert.key, cert: this.cert.cert });
    // pveproxy workers that died on a bad certificate: connections go nowhere.
    // pveproxy (PVE::APIServer::AnyEvent) drops a connection idle for 5 s (its handle timeout).
    server.keepAliveTimeout = 5000;
    server.on("secureConnection", () => { this.tlsConnections++; });
    server.on("connection", (s: Socket) => {
      if (this.proxyDown) { s.destroy(); return; }
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    server.on("request", (req: IncomingMessage, res: ServerResponse) => { void this.handle(req, res); });
    await new Promise<void>((resolve) => server.listen(0, this.host, resolve));
    this.port = (server.address() as { port: number }).port;
    this.server = server;
    const commands = simCommandRunner(this);
    this.hostCommands = commands.calls;
    const control = http.createServer((req, res) => {
      let body = "";
      req.setEncoding("utf8").on("data", (d: string) => { body += d; }).on("end", () => {
        void (async () => {
          const { argv } = JSON.parse(body || "{}") as { argv?: string[] };
          // A VM's `systemctl reboot` (sim-reboot.ts): queued, as systemd queues the job and returns.
          const r = argv?.[0] === "sim-vm-reboot" ? this.reboot(Number(argv[1]))
            : argv?.length ? await commands(argv) : { code: 2, stdout: "", stderr: "no argv\n" };
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(r));
        })().catch((e: Error) => { res.writeHead(500).end(JSON.stringify({ code: 1, stdout: "", stderr: `${e.message}\n` })); });
      });
    });
    await new Promise<void>((resolve) => control.listen(0, this.host, resolve));
    this.controlPort = (control.address() as { port: number }).port;
    this.control = control;
    return this;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const vmid of [...this.guests.keys(), ...this.vmGuests.keys(), ...this.qemuVms.keys()]) this.powerOff(vmid);
    await Promise.all([...this.powerOffs]);
    for (const s of this.sockets) s.destroy();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    if (this.control) { this.control.closeAllConnections(); await new Promise<void>((resolve) => this.control!.close(() => resolve())); }
    if (this.root) await rm(this.root, { recursive: true, force: true });
  }

  /** A VM reached "running": its guest (sshd + root dir) comes up, as the OS would boot. */
  powerOn(vm: SimVm): void | Promise<void> {
    if (this.qemu && this.vmNetwork) return this.powerOnQemu(vm, this.qemu, this.vmNetwork);
    if (this.vmNetwork) {
      const node = this.nodeFor?.(vm.config.name ?? "");
      const g = (async () => {
        const root = this.guestRoot(vm.vmid);
        await unpackCdroms(root, vm.config, (vol) => this.volumeFile(vol));
        const guest = await startVmGuest({
          vmid: vm.vmid, name: vm.config.name ?? `vm${vm.vmid}`, root, sshkeys: vm.config.sshkeys ?? "",
          net: this.vmNetwork!, node: node?.asVmNode(), owner: { controlUrl: this.controlUrl },
          pveAbsent: !!node && this.imagesWithoutPve.includes(vmImage(vm, this)),
          userData: await qemuSnippet(vm.config.cicustom, (s) => this.storages.get(s)?.path, this.fs),
        });
        // That node's own VMs plug into the bridge inside this VM (nested networking),
        // and its storage paths are this VM's files.
        if (node?.vmNetwork) node.vmNetwork.netns = guest.netns;
        node?.fs.attach(guest.fsRoot);
        return guest;
      })();
      // The agent never answers (boot reports it); the reason is kept for the test's failure message.
      g.catch((e: Error) => { this.guestErrors.push(`VM ${vm.vmid}: ${e.message}`); });
      this.vmGuests.set(vm.vmid, g);
      return;
    }
    if (!this.withGuests) return;
    const g = startGuest(vm.vmid, this.guestRoot(vm.vmid), vm.config.sshkeys ?? "");
    g.catch(() => { /* reported by guestAccess */ });
    this.guests.set(vm.vmid, g);
  }

  /** A reboot of a running real-process VM: its processes stop, its disk and NIC stay, it boots again. */
  private reboot(vmid: number): { code: number; stdout: string; stderr: string } {
    const g = this.vmGuests.get(vmid);
    if (!g) return { code: 1, stdout: "", stderr: `VM ${vmid} is not running\n` };
    this.reboots.set(vmid, (this.reboots.get(vmid) ?? 0) + 1);
    const next = g.then(async (guest) => {
      await new Promise((r) => setImmediate(r)); // the caller's `systemctl reboot` returns first
      const script = bootScripts.get(guest)!;
      await shutdownVm(guest.netns);
      const sshd = await bootVm(guest.netns, script, vmid);
      // The VM's "/" is the new boot's (sim-vm.ts: through sshd's /proc root); the node it is reads its files there.
      const booted = { ...guest, sshd, fsRoot: `/proc/${sshd.pid}/root` };
      bootScripts.set(booted, script);
      const vm = this.vms.get(vmid);
      if (vm) this.nodeOf(vm)?.fs.attach(booted.fsRoot);
      return booted;
    });
    next.catch((e: Error) => { this.guestErrors.push(`VM ${vmid} reboot: ${e.message}`); });
    this.vmGuests.set(vmid, next);
    return { code: 0, stdout: "", stderr: "" };
  }

  /** A VM stopped: its guest's processes die at once. */
  powerOff(vmid: number): void {
    const qg = this.qemuVms.get(vmid);
    if (qg) {
      this.qemuVms.delete(vmid);
      this.qemuUp.delete(vmid);
      const done: Promise<void> = qg.then(stopQemuVm).catch(() => {}).finally(() => this.powerOffs.delete(done));
      this.powerOffs.add(done);
      return;
    }
    const vg = this.vmGuests.get(vmid);
    if (vg) {
      this.vmGuests.delete(vmid);
      const done: Promise<void> = vg.then(stopVmGuest).catch(() => {}).finally(() => this.powerOffs.delete(done));
      this.powerOffs.add(done);
      return;
    }
    const g = this.guests.get(vmid);
    if (!g) return;
    this.guests.delete(vmid);
    const done: Promise<void> = g.then(stopGuest).catch(() => {}).finally(() => this.powerOffs.delete(done));
    this.powerOffs.add(done);
  }

  /** Real-guest mode: QEMU runs once this resolves (PVE's start task ends there); a guest power-off stops the VM. */
  private async powerOnQemu(vm: SimVm, qemu: QemuGuests, net: VmNetwork): Promise<void> {
    const node = this.nodeFor?.(vm.config.name ?? "");
    const cdroms = await Promise.all(cdromVolumes(vm.config).map(async ({ key, volume }) => ({ key, data: await this.volumeFile(volume) })));
    const g = startQemuVm({
      vmid: vm.vmid, name: vm.config.name ?? `vm${vm.vmid}`, dir: this.guestRoot(vm.vmid), config: vm.config, cdroms,
      userData: await qemuSnippet(vm.config.cicustom, (s) => this.storages.get(s)?.path, this.fs), net, qemu, node: node?.asVmNode(),
    });
    this.qemuVms.set(vm.vmid, g);
    // A QEMU that does not start fails the start task and leaves the VM stopped, as PVE does.
    const q = await g.catch((e: Error) => {
      this.qemuVms.delete(vm.vmid);
      vm.status = "stopped";
      this.guestErrors.push(`VM ${vm.vmid}: ${e.message}`);
      throw e;
    });
    this.qemuUp.set(vm.vmid, q);
    // The node this VM is reads its /var/lib/vz through the guest's agent (sim-node-fs.ts).
    node?.fs.attachAgent((cmd, args) => q.agent.call(cmd, args));
    void q.exited.then(() => {
      if (this.qemuVms.get(vm.vmid) !== g) return; // stopped through the API
      vm.status = "stopped";
      vm.agentReadyAt = undefined;
      this.powerOff(vm.vmid);
    });
  }

  /** A real-guest VM's agent channel, while its QEMU runs. */
  qemuAgent(vmid: number): QgaChannel | undefined { return this.qemuUp.get(vmid)?.agent; }

  /** A running real-guest VM (its QEMU, tap, console), for tests. */
  qemuVm(vmid: number): SimQemuVm | undefined { return this.qemuUp.get(vmid); }

  /** `qm shutdown` of a real-guest VM: ACPI, then the power-off; false when the VM is no real guest. */
  async shutdownQemu(vmid: number, timeoutMs: number): Promise<boolean> {
    const q = this.qemuUp.get(vmid);
    if (!q) return false;
    await shutdownQemuVm(q, timeoutMs);
    return true;
  }

  /** Resolves once every power-off begun so far has finished. */
  async settled(): Promise<void> { await Promise.all([...this.powerOffs]); }

  /** The simulator standing for the node a VM of this one is (nodeFor), if any. */
  nodeOf(vm: SimVm): PveSim | undefined { return this.nodeFor?.(vm.config.name ?? ""); }

  /** The VM standing for this node was destroyed: what was on its disk (VMs, templates, files) is gone. */
  wipe(): void { this.vms.clear(); this.fs.detach(); }

  guestRoot(vmid: number): string { return join(this.root, "guests", String(vmid)); }

  /** A `<storage>:<dir>/<file>` volume's bytes, from this node's storage. */
  private async volumeFile(vol: string): Promise<Buffer> {
    const [store, rel] = vol.split(":") as [string, string];
    const base = this.storages.get(store)?.path;
    if (!base) throw new Error(`storage '${store}' does not exist`);
    return this.fs.readFile(join(base, rel.startsWith("iso/") ? `template/${rel}` : rel));
  }

  /** The address the guest agent reports: the VM's own in real-process mode (throws while it is not up). */
  async agentAddress(vmid: number): Promise<string> {
    const qa = this.qemuAgent(vmid);
    if (qa) return qemuGuestAddress(await qa.call("guest-network-get-interfaces"));
    const g = this.vmGuests.get(vmid);
    return g ? (await g).address : this.guestAddress(vmid);
  }

  /** Network namespaces of running real-process VMs. */
  get vmNamespaces(): Promise<string[]> {
    return Promise.all([...this.vmGuests.values()].map((g) => g.then((x) => x.netns, () => ""))).then((l) => l.filter(Boolean));
  }

  asVmNode(): VmNode {
    return { node: this.node, certFile: this.paths.certFile, apiHost: this.host, apiPort: this.port, controlUrl: this.controlUrl, domain: this.domain };
  }

  /** PveProvider's guestAccess seam: this VM's sshd on 127.0.0.1 and its root directory. */
  async guestAccess(vmid: number): Promise<{ host: string; port: number; root: string }> {
    const g = this.guests.get(vmid);
    if (!g) throw new Error(`simulated VM ${vmid} is not running`);
    const guest = await g;
    return { host: "127.0.0.1", port: guest.sshd.port, root: guest.root };
  }

  /** What `pvecm updatecerts --force` does: a new certificate (zone-id SAN when asked). */
  async installCert(zoneId: boolean): Promise<void> {
    this.cert = await makeSimCert(this.paths.certDir, this.node, { zoneId });
    this.server?.setSecureContext({ key: this.cert.key, cert: this.cert.cert });
  }

  /** `systemctl restart pveproxy`: workers survive only with a valid certificate. */
  restartProxy(): void { this.proxyDown = this.cert.subjectAltName.includes("%"); }

  ms(pveMs: number): number { return Math.max(1, Math.round(pveMs * this.timeScale)); }

  later(pveMs: number, fn: () => void): void {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, this.ms(pveMs));
    this.timers.add(t);
  }

  delay(pveMs: number): Promise<void> { return new Promise((resolve) => this.later(pveMs, resolve)); }

  digest(obj: unknown): string { return createHash("sha1").update(JSON.stringify(obj)).digest("hex"); }

  /** Starts a task; `work` runs when it ends and its throw becomes the exitstatus. */
  startTask(type: string, id: string, user: string, pveMs: number, log: string[], work: (t: SimTask) => void | Promise<void>): string {
    const pid = this.nextPid++;
    const upid = formatUpid({ node: this.node, pid, pstart: 0x6ae8 + pid, starttime: Math.floor(Date.now() / 1000), type, id, user });
    const task: SimTask = {
      upid, node: this.node, type, id, user, pid, pstart: 0x6ae8 + pid, starttime: Math.floor(Date.now() / 1000),
      status: "running", log: [...log], misses: 0, startedMs: Date.now(),
    };
    this.tasks.set(upid, task);
    // Work that acts on a real process (QEMU) ends the task when it is done.
    this.later(pveMs, () => {
      void (async () => work(task))().then(() => {
        task.exitstatus = "OK";
        task.log.push("TASK OK");
      }, (e: Error) => {
        const msg = e.message.split("\n")[0]!;
        task.exitstatus = msg;
        task.log.push(`TASK ERROR: ${msg}`);
      }).finally(() => {
        task.status = "stopped";
        task.endedMs = Date.now();
      });
    });
    return upid;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://x");
    const method = req.method ?? "GET";
    const apiPath = url.pathname.replace(/^\/api2\/json/, "");
    const rec: RecordedRequest = { method, template: "", path: safeDecode(apiPath), status: 0, at: Date.now() };
    this.requests.push(rec);
    const send = (status: number, body: string, reason?: string) => {
      rec.status = status;
      rec.answeredAt = Date.now();
      if (res.destroyed) return;
      // pveproxy keeps a connection alive only after a success: any answer >= 400 closes it.
      res.writeHead(status, reason ?? "OK", {
        ...(body ? { "content-type": "application/json;charset=UTF-8" } : {}), ...(status >= 400 ? { connection: "close" } : {}),
      });
      res.end(body);
    };
    const fail = (e: SimError) => {
      const body: Record<string, unknown> = { data: null, message: `${e.message}\n` };
      if (e.errors) body.errors = e.errors;
      send(e.status, JSON.stringify(body), e.message.split("\n")[0]);
    };
    try {
      const raw = await readBody(req);
      const params: Record<string, string> = Object.fromEntries(url.searchParams);
      const ctype = req.headers["content-type"] ?? "";
      if (raw) Object.assign(params, ctype.includes("json") ? wireValues(JSON.parse(raw) as Record<string, unknown>) : Object.fromEntries(new URLSearchParams(raw)));
      rec.params = { ...params };
      let match: { route: Route; params: Record<string, string> } | undefined;
      for (const route of this.routes) {
        if (route.method !== method) continue;
        const m = route.re.exec(apiPath);
        if (m) { match = { route, params: Object.fromEntries(route.names.map((n, i) => [n, decodeURIComponent(m[i + 1]!)])) }; break; }
      }
      if (!match) { fail(new SimError(501, `Method '${method} ${apiPath}' not implemented`)); return; }
      rec.template = match.route.template;
      // PVE validates the path's parameters with the others, against the endpoint's schema.
      rec.params = { ...params, ...match.params };
      const auth = req.headers.authorization;
      const who = this.authenticate(auth);
      if (!who) {
        await this.delay(3000);
        send(401, "", auth ? "Authentication failed!" : "No ticket");
        return;
      }
      const schemaErrors = validateRequest(match.route.key, rec.params, this.release);
      if (schemaErrors) {
        rec.schemaErrors = schemaErrors;
        fail(new SimError(400, "Parameter verification failed.", schemaErrors));
        return;
      }
      const slow = this.faults.slowSync[`${method} ${match.route.template}`];
      if (slow && (slow.times ?? Infinity) > 0) {
        if (slow.times !== undefined) slow.times--;
        if (slow.ms > 30_000) {
          await this.delay(30_000);
          // pveproxy gave up; pvedaemon keeps working on the request.
          this.later(slow.ms - 30_000, () => { try { match!.route.handler(params, match!.params, who); } catch { /* lost */ } });
          send(596, "", "Connection timed out");
          return;
        }
        await this.delay(slow.ms);
      }
      const out = await match.route.handler(params, match.params, who);
      send(200, JSON.stringify({ data: out.data ?? null, ...out.extra }));
    } catch (e) {
      if (e instanceof SimError) fail(e);
      else fail(new SimError(500, (e as Error).message));
    }
  }

  private authenticate(header: string | undefined): string | undefined {
    const m = /^PVEAPIToken=(.+)$/.exec(header ?? "");
    if (!m) return undefined;
    const eq = m[1]!.lastIndexOf("=");
    if (eq < 0) return undefined;
    const id = m[1]!.slice(0, eq);
    const secret = m[1]!.slice(eq + 1);
    return this.tokens.get(id) === secret ? id : undefined;
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = "";
    req.setEncoding("utf8");
    req.on("data", (d: string) => { s += d; });
    req.on("end", () => resolve(s));
    req.on("error", reject);
  });
}

/** A JSON body's values as the form would carry them (PVE accepts JSON true/false for booleans). */
function wireValues(body: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(body).map(([k, v]) => [k, typeof v === "boolean" ? (v ? "1" : "0") : String(v)]));
}

function safeDecode(s: string): string {
  try { return decodeURIComponent(s); } catch { return s; }
}
