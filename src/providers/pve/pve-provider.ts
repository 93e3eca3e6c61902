// The `pve` provider: a child level is a linked clone of a template on this PVE
// node, configured for nesting (cpu=host) and cloud-init from a snippet hsd
// writes itself. Only the engine calls it. Every API call goes through
// PveClient.api, typed by PVE's own schema (pve-schema.ts).
// Imported by: src/providers/pve.

import { hostname as osHostname } from "node:os";
import { lookup } from "node:dns/promises";
import { join } from "node:path";
import { rm } from "node:fs/promises";
import type { PveConfig } from "./pve-config.js";
import type { ChildEndpoint, ChildHandle, ChildInstallSpec, PhaseContext, Provider } from "../provider.js";
import type { CheckResult } from "../../domain/checks.js";
import { PhaseTimeoutError, ProviderError, VmidTakenError } from "../../domain/errors.js";
import type { PlannedNode } from "../../domain/plan.js";
import { withTimeout } from "../../util/timeout.js";
import { PveClient, defaultSleep, isPveError, type Sleep, type WaitTaskOptions } from "./pve-client.js";
import { missingAs127, runCommand, type CommandRunner } from "../../util/command-runner.js";
import { runPreflight, isUnroutable, storageAvail as storageAvailOf, type StorageAvail } from "./preflight.js";
import { parseUpid } from "./upid.js";
import { installChild, type InstallOptions } from "./install-child.js";
import { writeBootMedia, type UserDataInput } from "./boot-media.js";
import { STEP_HINTS } from "../../domain/hints.js";
import { pickTemplate, TemplateLocks, type HeldImages } from "./image-template.js";
import { resizeBootDisk } from "./node-disk.js";

/** The dir storage an image is imported from when this level makes a template (PVE's `local`). */
const IMPORT_STORAGE = "local";
import { buildTemplate, prepareImport, type TemplateImage } from "./ensure-template.js";
import { beginTemplateReads } from "./child-preflight.js";

export interface PveProviderOptions extends InstallOptions {
  readonly config: PveConfig;
  /** pve.token_secret from the level's secrets.yaml; kept inside the client only. */
  readonly tokenSecret: string;
  /** OpenSSH public keys authorized for root in the child (this level's own key). */
  readonly sshPublicKeys: readonly string[];
  /** Host commands (pvesm, pvecm, sysctl, systemctl, ip). Default: real processes. */
  readonly commands?: CommandRunner;
  /** HTTP timeouts for the API client (connect ≤ 30 s; request default 45 s). */
  readonly connectTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
  /** Filesystem roots, overridable for tests. */
  readonly sysRoot?: string;
  readonly hostsFile?: string;
  readonly pveCertFile?: string;
  readonly hostname?: string;
  readonly fqdn?: string;
  readonly resolveHost?: (name: string) => Promise<string[]>;
  /** Free space needed on pve.storage. Default 20 GiB. */
  readonly minFreeKiB?: number;
  readonly sleep?: Sleep;
  /** Task status polling: the shortest and longest pause (pve-client.ts taskPollDelay). Default TASK_POLL_MIN_MS to 2 s. */
  readonly taskPoll?: { readonly initialMs: number; readonly maxMs: number };
  /**
   * Guest agent polling during boot: calls start at most every intervalMs (default 1 s),
   * and a call that took longer is followed after minPauseMs (default 0: at once). See agentPollPause.
   */
  readonly agentPoll?: { readonly intervalMs: number; readonly minPauseMs: number };
  /** Hard bound on boot's wait for an address besides the phase signal. Default 5 min. */
  readonly bootTimeoutMs?: number;
  readonly nextidAttempts?: number;
  /** The images this level holds: a manifest node's image picks the template it is cloned from (image-template.ts). */
  readonly images?: HeldImages;
  /**
   * The image pve.image names (level 0 only): preflight makes the template at
   * pve.template from it when that vmid is free. Undefined: the template must exist.
   */
  readonly templateImage?: () => Promise<TemplateImage | undefined>;
  /** cloud-init user-data for the child (default: hostname, keys, the boot CD's runcmd, guest agent). */
  readonly userData?: (child: UserDataInput) => string;
}

/** One entry of the agent's result; PVE's schema declares that answer only as an object. */
interface Iface { name: string; "ip-addresses"?: { "ip-address": string; "ip-address-type": string }[] }

const AGENT_NOT_READY = /No QEMU guest agent configured|is not running|got timeout/;
const AGENT_POLL_INTERVAL_MS = 1000;
// A call PVE held ~3 s already spaced the calls: the next follows at once (0),
// and the agent that came up during the hold is seen by that next call.
const AGENT_POLL_MIN_PAUSE_MS = 0;

/**
 * The pause after an agent call that did not yield an address, so that calls
 * start at most every `intervalMs` but a slow call is followed at once: while
 * the agent is down PVE holds each call ~3 s before it fails (pve-api.md), so
 * the agent coming up is noticed within that call and `minPauseMs`. A
 * backoff on top (1 s growing to 5 s, as before) left a booted VM unnoticed
 * for up to 5 s more, depending on where the boot fell among the calls.
 */
export function agentPollPause(callMs: number, intervalMs: number, minPauseMs: number): number {
  return Math.max(minPauseMs, Math.round(intervalMs - callMs));
}
/** How long a leaf's guest gets to power off on ACPI before PVE stops it (its reboot: src/nest/leaf-reboot.ts). */
const LEAF_SHUTDOWN_S = 120;

/** What PVE's sshkeys parameter wants: URL-encoded once here, form-encoded again on the wire. */
export function encodeSshKeys(keys: readonly string[]): string {
  return encodeURIComponent(keys.join("\n"));
}

/** A global unicast address from guest-network-get-interfaces, IPv4 first; undefined while none. */
export function pickGuestAddress(ifaces: readonly Iface[]): string | undefined {
  const addrs = ifaces.filter((i) => i.name !== "lo").flatMap((i) => i["ip-addresses"] ?? [])
    .filter((a) => !isUnroutable(a["ip-address"]));
  return (addrs.find((a) => a["ip-address-type"] === "ipv4") ?? addrs[0])?.["ip-address"];
}

export class PveProvider implements Provider {
  readonly name = "pve" as const;
  readonly client: PveClient;
  private readonly cfg: PveConfig;
  private readonly commands: CommandRunner;
  private readonly sleep: Sleep;
  private readonly byName = new Map<string, ChildHandle>();
  private makingTemplate?: Promise<CheckResult[]>;
  private readonly templateLocks = new TemplateLocks();

  constructor(private readonly opts: PveProviderOptions) {
    this.cfg = opts.config;
    this.sleep = opts.sleep ?? defaultSleep;
    // A missing host tool is a failed check with a hint, not a crash.
    this.commands = missingAs127(opts.commands ?? runCommand);
    this.client = new PveClient({
      url: opts.config.url, fingerprint: opts.config.fingerprint, tokenId: opts.config.tokenId, tokenSecret: opts.tokenSecret,
      connectTimeoutMs: opts.connectTimeoutMs, requestTimeoutMs: opts.requestTimeoutMs, sleep: this.sleep,
    });
  }

  async preflight(ctx: PhaseContext): Promise<CheckResult[]> {
    // One storage status answers both the disk-space check and, at level 0, the template's
    // room check (made only once the API check passed); asked right after that check.
    let asked: Promise<StorageAvail> | undefined;
    const storageAvail = (apiUp: boolean) => asked ??= storageAvailOf(this.client, this.commands, this.cfg.node, this.cfg.storage, ctx.signal, apiUp);
    const checks = await runPreflight({
      client: this.client, config: this.cfg, commands: this.commands,
      sysRoot: this.opts.sysRoot ?? "/sys", hostsFile: this.opts.hostsFile ?? "/etc/hosts",
      pveCertFile: this.opts.pveCertFile ?? "/etc/pve/local/pve-ssl.pem",
      hostname: this.opts.hostname ?? osHostname().split(".")[0]!, fqdn: this.opts.fqdn,
      resolveHost: this.opts.resolveHost ?? (async (n) => (await lookup(n, { all: true })).map((a) => a.address)),
      minFreeKiB: this.opts.minFreeKiB ?? 20 * 1024 * 1024, sleep: this.sleep, signal: ctx.signal, storageAvail,
      ...(this.opts.templateImage ? { makeTemplate: (version) => this.makeTemplateOnce(ctx, storageAvail(true), version), templateInFlight: () => this.makingTemplate } : {}),
    });
    for (const c of checks) ctx.emit({ kind: "log", message: `${c.name}: ${c.result} - ${c.detail}` });
    return checks;
  }

  /** Children's preflights can run side by side: one template making at a time, the others share its outcome. */
  private makeTemplateOnce(ctx: PhaseContext, storageAvail: Promise<StorageAvail>, version: string): Promise<CheckResult[]> {
    this.makingTemplate ??= this.makeTemplate(ctx, storageAvail, version).finally(() => { this.makingTemplate = undefined; });
    return this.makingTemplate;
  }

  /**
   * Level 0's template from its image, with the same checks a child runs (child-preflight.ts).
   * The preflight has just read the version and found the vmid free: those answers stand in for
   * the checks' own reads, and the import storage is made ready beside the checks (as a child's
   * is while its image is on its way), not after them: two round trips to pveproxy fewer.
   */
  private async makeTemplate(ctx: PhaseContext, storageAvail: Promise<StorageAvail>, version: string): Promise<CheckResult[]> {
    const image = await this.opts.templateImage!();
    if (!image) return [{ name: "template", result: "failed", detail: `VM ${this.cfg.template} does not exist on ${this.cfg.node}, and image ${this.cfg.image} is not under images:`, hint: STEP_HINTS.noTemplate }];
    const log = (message: string) => ctx.emit({ kind: "log", message });
    const importDir = prepareImport({ client: this.client, importStorage: IMPORT_STORAGE, signal: ctx.signal, log });
    importDir.catch(() => {}); // awaited by the template, or dropped with failed checks
    const { node, template: vmid } = this.cfg;
    const reads = beginTemplateReads({ client: this.client, node, vmid, image, signal: ctx.signal, version, slot: { state: "free" } });
    return buildTemplate({
      client: this.client, commands: this.commands, node, vmid, image, reads, importDir,
      storage: this.cfg.storage, bridge: this.cfg.bridge, importStorage: IMPORT_STORAGE, storageAvail,
      task: { signal: ctx.signal, pollInitialMs: this.opts.taskPoll?.initialMs, pollMaxMs: this.opts.taskPoll?.maxMs }, signal: ctx.signal, log,
    });
  }

  async provision(name: string, _depth: number, ctx: PhaseContext, want?: PlannedNode, install?: ChildInstallSpec): Promise<ChildHandle> {
    const known = this.byName.get(name);
    if (known && await this.alive(known)) return known;
    const { node } = this.cfg;
    const step = (done: number, message: string) => ctx.emit({ kind: "progress", message, progress: { unit: "step", done, total: 3 } });
    // A manifest node's image picks the template (made here on first use); a uniform tree clones pve.template.
    const template = await pickTemplate(want?.image, {
      client: this.client, node, held: this.opts.images, config: this.cfg, importStorage: IMPORT_STORAGE, locks: this.templateLocks,
      storage: this.cfg.storage, bridge: this.cfg.bridge, signal: ctx.signal,
      task: { signal: ctx.signal, pollInitialMs: this.opts.taskPoll?.initialMs, pollMaxMs: this.opts.taskPoll?.maxMs },
      log: (message) => ctx.emit({ kind: "log", message }),
    });
    let vmid = 0;
    let upid = "";
    const attempts = this.opts.nextidAttempts ?? 5;
    if (want?.vmid) {
      vmid = want.vmid;
      const taken = () => new VmidTakenError(`vmid ${vmid} of node ${name} is already a VM on ${node}`, { details: { level: name, vmid, node } });
      const exists = await this.client.api("GET /nodes/{node}/qemu/{vmid}/status/current", { node, vmid }, { signal: ctx.signal })
        .then(() => true, (e: unknown) => { if (isPveError(e, 500, /does not exist/)) return false; throw e; });
      if (exists) throw taken();
      upid = await this.client.api("POST /nodes/{node}/qemu/{vmid}/clone", { node, vmid: template, newid: vmid, name: vmName(name) }, { signal: ctx.signal })
        .catch((e: unknown) => { throw isPveError(e, 500, /already exists/) || isPveError(e, 400, /already exists/) ? taken() : e; });
    }
    for (let i = 1; !upid; i++) {
      // The schema says integer; PVE sends it as a JSON string ("100").
      vmid = Number(await this.client.api("GET /cluster/nextid", {}, { signal: ctx.signal }));
      try {
        upid = await this.client.api("POST /nodes/{node}/qemu/{vmid}/clone", { node, vmid: template, newid: vmid, name: vmName(name) }, { signal: ctx.signal });
        break;
      } catch (e) {
        // nextid reserves nothing: a concurrent caller may have taken the id.
        if (i < attempts && (isPveError(e, 500, /already exists/) || isPveError(e, 400, /already exists/))) {
          ctx.emit({ kind: "log", message: `vmid ${vmid} was taken meanwhile; asking for another` });
          continue;
        }
        throw e;
      }
    }
    const handle: ChildHandle = { name, data: { vmid, node, provider: "pve" } };
    // The snippet is a file on this node named by the vmid: it needs the id, not the cloned VM,
    // so it is written while the clone task runs (a storage read and an fsync'd write off the
    // critical path). The VM's config, which names it, still waits for the clone.
    // So is its boot CD, which the snippet's runcmd names.
    const snippetWrite = writeBootMedia({
      client: this.client, config: this.cfg, options: this.opts, commands: this.commands, vmid, name, install, signal: ctx.signal,
      log: (message) => ctx.emit({ kind: "log", message }),
    });
    snippetWrite.catch(() => {}); // awaited after the clone, or settled before the cleanup
    try {
      step(0, `cloning template ${template} as VM ${vmid}`);
      await this.client.waitTask(upid, this.taskOpts(ctx, upid));
      step(1, "writing cloud-init snippet");
      const snippet = await snippetWrite;
      const vol = `${this.cfg.snippetStorage}:snippets/${snippet.file}`;
      step(2, `configuring VM ${vmid}`);
      // memory is an integer up to PVE 8.0 and a property string ([current=]<MiB>) since 8.1: digits fit both.
      const cfgUpid = await this.client.api("POST /nodes/{node}/qemu/{vmid}/config", {
        node, vmid, cpu: "host", cores: want?.cores || this.cfg.cores, memory: String(want?.memoryMb || this.cfg.memoryMiB), net0: `virtio,bridge=${this.cfg.bridge}`,
        agent: "1", ciupgrade: 0, ide2: `${this.cfg.storage}:cloudinit`, ipconfig0: "ip=dhcp",
        sshkeys: encodeSshKeys(this.opts.sshPublicKeys), cicustom: `user=${vol}`,
        // ide2 holds the cloud-init drive; the boot CD goes on the same controller beside it.
        ...(snippet.cd ? { ide3: `${this.cfg.snippetStorage}:iso/${snippet.cd.file},media=cdrom` } : {}),
      }, { signal: ctx.signal });
      await this.client.waitTask(cfgUpid, this.taskOpts(ctx, cfgUpid));
      if (want?.diskGb) {
        await resizeBootDisk({
          client: this.client, node, vmid, diskGb: want.diskGb, level: name, signal: ctx.signal, task: (u) => this.taskOpts(ctx, u),
          log: (message) => ctx.emit({ kind: "log", message }),
        });
      }
      step(3, `VM ${vmid} ready to boot`);
      const done: ChildHandle = { name, data: { ...handle.data, snippet: snippet.path, ...(snippet.cd ? { bootCd: snippet.cd.path } : {}) } };
      this.byName.set(name, done);
      return done;
    } catch (e) {
      // A half-built VM would leak: the engine only learns handles we return. Its snippet too,
      // when it was written: destroy removes the one the handle names.
      const written = await snippetWrite.then((w) => w, () => undefined);
      const partial = written ? { ...handle, data: { ...handle.data, snippet: written.path, ...(written.cd ? { bootCd: written.cd.path } : {}) } } : handle;
      await this.destroy(partial, { ...ctx, signal: AbortSignal.timeout(60_000) }).catch(() => {});
      throw e;
    }
  }

  async boot(child: ChildHandle, ctx: PhaseContext): Promise<ChildHandle & { readonly address: string }> {
    const { vmid, node } = ids(child);
    const st = await this.client.api("GET /nodes/{node}/qemu/{vmid}/status/current", { node, vmid }, { signal: ctx.signal });
    if (st.status !== "running") {
      const upid = await this.client.api("POST /nodes/{node}/qemu/{vmid}/status/start", { node, vmid }, { signal: ctx.signal });
      await this.client.waitTask(upid, this.taskOpts(ctx, upid));
    }
    const budget = this.opts.bootTimeoutMs ?? 300_000;
    const address = await withTimeout(budget, () => new PhaseTimeoutError(`VM ${vmid} reported no routable address within ${budget} ms`, {
      details: { vmid, hint: STEP_HINTS.noGuestAddress },
    }), async (signal) => {
      const intervalMs = this.opts.agentPoll?.intervalMs ?? AGENT_POLL_INTERVAL_MS;
      const minPauseMs = this.opts.agentPoll?.minPauseMs ?? AGENT_POLL_MIN_PAUSE_MS;
      let lastNote = "";
      for (;;) {
        let note: string;
        const t0 = performance.now();
        try {
          const r = await this.client.api("GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", { node, vmid }, { signal });
          const a = pickGuestAddress(Array.isArray(r.result) ? r.result as Iface[] : []);
          if (a) return a;
          note = "guest agent up; no global address yet";
        } catch (e) {
          if (!isPveError(e, 500, AGENT_NOT_READY)) throw e;
          note = `waiting for the guest agent (${String(e.details.pveMessage)})`;
        }
        if (note !== lastNote) ctx.emit({ kind: "log", message: note });
        lastNote = note;
        await this.sleep(agentPollPause(performance.now() - t0, intervalMs, minPauseMs), signal);
      }
    }, ctx.signal);
    ctx.emit({ kind: "log", message: `VM ${vmid} has address ${address}` });
    return { ...child, data: { ...child.data, address }, address };
  }

  /**
   * A leaf's reboot: a clean shutdown (ACPI through the guest; PVE stops it
   * after LEAF_SHUTDOWN_S if the guest does not power off), then the boot above:
   * start, and the guest agent's address again (a DHCP lease may change it).
   */
  async reboot(child: ChildHandle, ctx: PhaseContext): Promise<ChildHandle & { readonly address: string }> {
    const { vmid, node } = ids(child);
    const upid = await this.client.api("POST /nodes/{node}/qemu/{vmid}/status/shutdown", { node, vmid, timeout: LEAF_SHUTDOWN_S, forceStop: 1 }, { signal: ctx.signal });
    await this.client.waitTask(upid, this.taskOpts(ctx, upid));
    return this.boot(child, ctx);
  }

  async install(child: ChildHandle, spec: ChildInstallSpec, ctx: PhaseContext): Promise<{ handle: ChildHandle; endpoint: ChildEndpoint }> {
    ids(child);
    const r = await installChild({ options: this.opts, config: this.cfg, connectTimeoutMs: this.opts.connectTimeoutMs, sleep: this.sleep }, child, spec, ctx);
    this.byName.set(child.name, r.handle);
    return r;
  }

  async alive(child: ChildHandle): Promise<boolean> {
    const { vmid, node } = ids(child);
    try {
      const st = await this.client.api("GET /nodes/{node}/qemu/{vmid}/status/current", { node, vmid });
      return st.status === "running";
    } catch (e) {
      if (isPveError(e, 500, /does not exist/)) return false;
      throw e;
    }
  }

  async destroy(child: ChildHandle, ctx: PhaseContext): Promise<void> {
    const { vmid, node } = ids(child);
    const gone = (e: unknown) => isPveError(e, 500, /does not exist/);
    try {
      const st = await this.client.api("GET /nodes/{node}/qemu/{vmid}/status/current", { node, vmid }, { signal: ctx.signal });
      if (st.status === "running") {
        const stop = await this.client.api("POST /nodes/{node}/qemu/{vmid}/status/stop", { node, vmid }, { signal: ctx.signal });
        await this.client.waitTask(stop, this.taskOpts(ctx, stop));
      }
      const upid = await this.client.api("DELETE /nodes/{node}/qemu/{vmid}", { node, vmid, purge: 1, "destroy-unreferenced-disks": 1 }, { signal: ctx.signal });
      await this.client.waitTask(upid, this.taskOpts(ctx, upid));
    } catch (e) {
      if (!gone(e)) throw e;
    }
    const snippet = child.data.snippet;
    if (typeof snippet === "string" && snippet.endsWith(`hsd-${vmid}.yaml`)) await rm(snippet, { force: true });
    const cd = child.data.bootCd;
    if (typeof cd === "string" && cd.endsWith(`hsd-${vmid}.iso`)) await rm(cd, { force: true });
    this.byName.delete(child.name);
  }

  /** Task waits stream the task's log lines upward as progress ("<task type> <id>: <line>"). */
  private taskOpts(ctx: PhaseContext, upid: string): WaitTaskOptions {
    let label = "task";
    try { const u = parseUpid(upid); label = `${u.type} ${u.id}`; } catch { /* an odd UPID still streams */ }
    return {
      signal: ctx.signal, pollInitialMs: this.opts.taskPoll?.initialMs, pollMaxMs: this.opts.taskPoll?.maxMs,
      onLog: (lines) => { for (const l of lines) ctx.emit({ kind: "progress", message: `${label}: ${l}` }); },
    };
  }
}

function ids(child: ChildHandle): { vmid: number; node: string } {
  const vmid = Number(child.data.vmid);
  const node = String(child.data.node ?? "");
  if (!Number.isInteger(vmid) || vmid < 100 || !node) throw new ProviderError("child handle has no vmid/node", { details: { name: child.name } });
  return { vmid, node };
}

/** The clone's `name`: PVE's schema wants a DNS name (labels of [a-z0-9-], no dash at either end). */
export function vmName(level: string): string {
  return `hsd-${level}`.toLowerCase().replace(/[^a-z0-9.-]/g, "-").slice(0, 63)
    .split(".").map((l) => l.replace(/^-+|-+$/g, "")).filter(Boolean).join(".");
}
