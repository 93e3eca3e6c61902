// The simulator's routes: the pve-api.md endpoint list with its error texts.
// Test-only; imported by pve-sim.ts. Anything not listed here answers 501,
// so a client that strays from the documented surface fails loudly. Every
// route must be an endpoint of PVE's schema (pve-schema.ts): pve-sim.ts checks
// each request against it before a handler runs, so handlers only add the
// semantic errors PVE raises after validation.

import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { SIM_STORAGE_TOTAL_KIB, SimError, type PveSim, type SimVm } from "./pve-sim.js";
import { endpointSpec } from "./pve-schema-check.js";
import { diskRoutes } from "./sim-disk-routes.js";

type Out = { data?: unknown; extra?: Record<string, unknown> };
export interface Route {
  /** "METHOD /template": the route's key in PVE's schema table. */
  key: string;
  method: string; template: string; re: RegExp; names: string[];
  handler: (p: Record<string, string>, path: Record<string, string>, who: string) => Out | Promise<Out>;
}

const STORAGE_CONTENT: Record<string, string[]> = {
  dir: ["images", "rootdir", "vztmpl", "backup", "iso", "snippets", "import"],
  lvmthin: ["images", "rootdir"],
};

export function buildRoutes(sim: PveSim): Route[] {
  const routes: Route[] = [];
  const add = (method: string, template: string, handler: Route["handler"]) => {
    const key = `${method} ${template}`;
    if (!endpointSpec(key)) throw new Error(`simulator route ${key} is not an endpoint of PVE's schema table (pve-schema.ts)`);
    const names: string[] = [];
    const re = new RegExp(`^${template.replace(/\{(\w+)\}/g, (_m, n: string) => { names.push(n); return "([^/]+)"; })}$`);
    routes.push({ key, method, template, re, names, handler });
  };
  const missing = (vmid: number | string) => new SimError(500, `Configuration file 'nodes/${sim.node}/qemu-server/${vmid}.conf' does not exist`);
  const checkNode = (n: string) => {
    if (n !== sim.node) throw new SimError(500, `hostname lookup '${n}' failed - failed to get address info for: ${n}: Name or service not known`);
  };
  const vmOf = (path: Record<string, string>): SimVm => {
    checkNode(path.node!);
    const vm = sim.vms.get(Number(path.vmid));
    if (!vm) throw missing(path.vmid!);
    return vm;
  };
  const unlocked = (vm: SimVm) => { if (vm.config.lock) throw new SimError(500, `VM is locked (${vm.config.lock})`); };
  const param400 = (errors: Record<string, string>) => new SimError(400, "Parameter verification failed.", errors);
  const freeId = (from = 100) => { let id = from; while (sim.vms.has(id)) id++; return id; };
  const cfgDigest = (vm: SimVm) => sim.digest(vm.config);
  const storageOf = (id: string) => {
    const s = sim.storages.get(id);
    if (!s) throw new SimError(500, `storage '${id}' does not exist`);
    return s;
  };

  add("GET", "/version", () => ({ data: { version: sim.release, release: sim.release.split(".").slice(0, 2).join("."), repoid: "3e76eec21c4a14a7" } }));
  add("GET", "/nodes", () => ({
    data: [{ node: sim.node, status: "online", type: "node", id: `node/${sim.node}`, cpu: 0.02, maxcpu: 8, mem: 2e9, maxmem: 16e9, uptime: 3600, ssl_fingerprint: sim.fingerprint, level: "" }],
  }));
  add("GET", "/cluster/nextid", (p) => {
    if (p.vmid !== undefined) {
      if (sim.vms.has(Number(p.vmid))) throw param400({ vmid: `VM ${p.vmid} already exists` });
      return { data: String(p.vmid) };
    }
    const id = freeId();
    if (sim.faults.nextidCollisions > 0) {
      // nextid reserves nothing: another caller takes the id before our clone.
      sim.faults.nextidCollisions--;
      sim.vms.set(id, { vmid: id, status: "stopped", config: { name: "someone-else", memory: "512" } });
    }
    return { data: String(id) };
  });

  add("POST", "/nodes/{node}/qemu/{vmid}/clone", (p, path, who) => {
    const src = vmOf(path);
    const newid = Number(p.newid);
    const linked = src.config.template === "1" && p.full !== "1";
    if (linked && p.storage !== undefined) throw param400({ storage: "parameter 'storage' not allowed for linked clones" });
    unlocked(src);
    if (sim.vms.has(newid)) throw new SimError(500, `unable to create VM ${newid}: config file already exists`);
    const config: Record<string, string> = { ...src.config, lock: "clone" };
    delete config.template;
    if (p.name) config.name = p.name;
    config.scsi0 = `local-lvm:base-${src.vmid}-disk-0/vm-${newid}-disk-0,size=3G`;
    const vm: SimVm = { vmid: newid, status: "stopped", config };
    sim.vms.set(newid, vm);
    const upid = sim.startTask("qmclone", String(src.vmid), who, sim.faults.cloneMs, [
      `create ${linked ? "linked " : "full "}clone of drive scsi0 (local-lvm:base-${src.vmid}-disk-0)`,
      `  Logical volume "vm-${newid}-disk-0" created.`,
    ], () => {
      // As qemu-server does when a clone fails: the half-made VM's config is removed.
      if (sim.faults.cloneError) { sim.vms.delete(newid); throw new Error(sim.faults.cloneError); }
      delete vm.config.lock;
    });
    return { data: upid };
  });

  // Create (PVE 7.2+ import-from): the image must be a volume of this node.
  // As for PVE with an API token: an absolute path is refused (root@pam with a
  // password only), iso content is no import source, and only a dir storage
  // with content `import` holds import volumes. Nothing comes from elsewhere:
  // every accepted source is a file in this node's own storage, recorded in sim.imports.
  const alreadyExists = (vmid: number) => new SimError(500, `unable to create VM ${vmid} - VM ${vmid} already exists on node '${sim.node}'`);
  add("POST", "/nodes/{node}/qemu", async (p, path, who) => {
    checkNode(path.node!);
    const vmid = Number(p.vmid);
    if (sim.vms.has(vmid)) throw alreadyExists(vmid);
    const config: Record<string, string> = {};
    const log: string[] = [];
    let importedFrom: string | undefined;
    for (const [k, v] of Object.entries(p)) {
      if (k === "node" || k === "vmid" || k === "storage" || k === "start") continue;
      const m = /^([A-Za-z0-9_.-]+):0,import-from=([^,]+)(,.*)?$/.exec(v);
      if (/^(scsi|virtio|sata|ide)\d+$/.test(k) && m) {
        const [, target, src, rest] = m as unknown as [string, string, string, string | undefined];
        if (src.startsWith("/")) throw new SimError(403, "Only root can pass arbitrary filesystem paths.");
        const vm = /^([A-Za-z0-9_.-]+):([a-z]+)\/(.+)$/.exec(src);
        if (!vm) throw param400({ [k]: `invalid format - unable to parse volume ID '${src}'` });
        const st = storageOf(vm[1]!);
        if (vm[2] !== "import" && vm[2] !== "images") throw new SimError(500, `${k}: '${src}' has wrong type '${vm[2]}' - needs to be 'images' or 'import'`);
        if (!st.path || !st.content.split(",").includes(vm[2]!)) throw new SimError(500, `storage '${vm[1]}' does not support content-type '${vm[2]}'`);
        const file = join(st.path, vm[2]!, vm[3]!);
        if (!await sim.fs.exists(file)) throw new SimError(500, `${k}: volume '${src}' does not exist`);
        storageOf(target);
        importedFrom = file;
        const size = await sim.fs.size(file);
        config[k] = `${target}:vm-${vmid}-disk-0,size=${Math.max(1, Math.ceil(size / (1 << 20)))}M${rest ?? ""}`;
        log.push(`importing disk '${src}' to VM ${vmid} ...`, `transferred ${size} bytes`, `${k}: successfully created disk '${config[k]}'`);
        continue;
      }
      if (/:cloudinit$/.test(v)) { config[k] = `${v.split(":")[0]}:vm-${vmid}-cloudinit,media=cdrom`; continue; }
      if (/^net\d+$/.test(k) && /^virtio(,|$)/.test(v)) { config[k] = v.replace(/^virtio/, "virtio=BC:24:11:00:00:99"); continue; }
      config[k] = v;
    }
    // The volume checks above wait on the node's files: a create of the same vmid may have won meanwhile.
    if (sim.vms.has(vmid)) throw alreadyExists(vmid);
    const vm: SimVm = { vmid, status: "stopped", config: { ...config, lock: "create" } };
    sim.vms.set(vmid, vm);
    return { data: sim.startTask("qmcreate", String(vmid), who, sim.faults.taskMs, log, () => {
      delete vm.config.lock;
      if (importedFrom) sim.imports.push({ vmid, file: importedFrom });
    }) };
  });
  add("POST", "/nodes/{node}/qemu/{vmid}/template", (_p, path, who) => {
    const vm = vmOf(path);
    unlocked(vm);
    if (vm.config.template === "1") throw new SimError(500, `VM ${vm.vmid} is already a template`);
    if (vm.status === "running") throw new SimError(500, "you can't convert a VM to a template if the VM is running");
    return { data: sim.startTask("qmtemplate", String(vm.vmid), who, sim.faults.taskMs, [`renaming disks of VM ${vm.vmid} to base volumes`], () => {
      vm.config.template = "1";
      for (const [k, v] of Object.entries(vm.config)) {
        if (/^(scsi|virtio|sata|ide)\d+$/.test(k)) vm.config[k] = v.replace(`vm-${vm.vmid}-disk-`, `base-${vm.vmid}-disk-`);
      }
    }) };
  });

  add("GET", "/nodes/{node}/qemu/{vmid}/config", (_p, path) => {
    const vm = vmOf(path);
    return { data: { ...vm.config, digest: cfgDigest(vm) } };
  });
  const validateConfig = (vm: SimVm, p: Record<string, string>): Record<string, string> => {
    unlocked(vm);
    if (p.digest !== undefined && p.digest !== cfgDigest(vm)) throw new SimError(500, "checksum mismatch (file change by other user?)");
    const errors: Record<string, string> = {};
    const set: Record<string, string> = {};
    for (const [k, v] of Object.entries(p)) {
      if (k === "digest" || k === "delete" || k === "node" || k === "vmid" || k === "background_delay") continue;
      if (k === "cicustom") {
        for (const part of v.split(",")) {
          const vol = part.split("=")[1]!;
          if (!/^[A-Za-z0-9_.-]+:snippets\/[^/]+$/.test(vol)) throw new SimError(500, `volume '${vol}' is not in the snippets directory`);
        }
      }
      // A CD-ROM's ISO: a volume of the storage's iso content (<path>/template/iso/<file>).
      const iso = /^(ide|sata|scsi)\d+$/.test(k) ? /^([A-Za-z0-9_.-]+):iso\/([^/,]+)(,|$)/.exec(v) : null;
      if (iso) {
        const st = storageOf(iso[1]!);
        if (!st.content.split(",").includes("iso")) throw new SimError(500, `storage '${iso[1]}' does not support content-type 'iso'`);
      }
      if (/:cloudinit$/.test(v)) {
        const other = Object.entries(vm.config).find(([ok, ov]) => ok !== k && /cloudinit/.test(ov));
        if (other) throw new SimError(500, `cloud-init drive is already attached at '${other[0]}'`);
      }
      if (/^net\d+$/.test(k) && /^virtio(,|$)/.test(v)) {
        const mac = `BC:24:11:${[0, 0, 0].map(() => Math.floor(Math.random() * 256).toString(16).padStart(2, "0").toUpperCase()).join(":")}`;
        set[k] = v.replace(/^virtio/, `virtio=${mac}`);
        continue;
      }
      set[k] = v;
    }
    const mem = Number(set.memory ?? vm.config.memory ?? 512);
    if (set.balloon !== undefined && Number(set.balloon) > mem) errors.balloon = "balloon value too large (must be smaller than assigned memory)";
    if (Object.keys(errors).length) throw param400(errors);
    return set;
  };
  const applyConfig = (vm: SimVm, set: Record<string, string>, del: string | undefined) => {
    Object.assign(vm.config, set);
    for (const k of (del ?? "").split(/[,; ]/).filter(Boolean)) delete vm.config[k];
  };
  add("POST", "/nodes/{node}/qemu/{vmid}/config", (p, path, who) => {
    const vm = vmOf(path);
    const set = validateConfig(vm, p);
    return { data: sim.startTask("qmconfig", String(vm.vmid), who, sim.faults.taskMs, [`update VM ${vm.vmid}: ${Object.keys(set).join(" ")}`], () => applyConfig(vm, set, p.delete)) };
  });
  add("PUT", "/nodes/{node}/qemu/{vmid}/config", (p, path) => {
    const vm = vmOf(path);
    applyConfig(vm, validateConfig(vm, p), p.delete);
    return { data: null };
  });
  // The VM list and resize (sim-disk-routes.ts).
  for (const r of diskRoutes(sim, checkNode, vmOf)) add(r.method, r.template, r.handler);

  add("POST", "/nodes/{node}/qemu/{vmid}/status/start", (_p, path, who) => {
    const vm = vmOf(path);
    unlocked(vm);
    return { data: sim.startTask("qmstart", String(vm.vmid), who, sim.faults.taskMs, [], async () => {
      if (vm.status === "running") throw new Error(`VM ${vm.vmid} already running`);
      const cic = vm.config.cicustom;
      if (cic) {
        for (const part of cic.split(",")) {
          const vol = part.split("=")[1]!;
          const [store, rel] = vol.split(":");
          const st = sim.storages.get(store!);
          if (!st) throw new Error(`storage '${store}' does not exist`);
          if (!st.content.split(",").includes("snippets")) throw new Error(`storage '${store}' does not support content-type 'snippets'`);
          if (!st.path || !await sim.fs.exists(join(st.path, rel!))) throw new Error(`volume '${vol}' does not exist`);
        }
      }
      const bridge = /bridge=([^,]+)/.exec(vm.config.net0 ?? "")?.[1];
      if (bridge && !sim.bridges.has(bridge)) throw new Error(`bridge '${bridge}' does not exist`);
      vm.status = "running";
      vm.startedAt = Date.now();
      vm.agentFailedUntil = undefined;
      await sim.powerOn(vm);
      if (/^(1|enabled=1)/.test(vm.config.agent ?? "")) vm.agentReadyAt = Date.now() + sim.ms(sim.faults.agentDelayMs);
    }) };
  });
  const stopper = (type: string) => (_p: Record<string, string>, path: Record<string, string>, who: string) => {
    const vm = vmOf(path);
    return { data: sim.startTask(type, String(vm.vmid), who, sim.faults.taskMs, [], async () => {
      // A real guest powers itself off on ACPI (PVE's default 60 s); the task fails if it does not.
      if (type === "qmshutdown" && vm.status === "running") await sim.shutdownQemu(vm.vmid, 60_000);
      vm.status = "stopped";
      vm.agentReadyAt = undefined;
      sim.powerOff(vm.vmid);
    }) };
  };
  add("POST", "/nodes/{node}/qemu/{vmid}/status/stop", stopper("qmstop"));
  add("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown", stopper("qmshutdown"));
  add("GET", "/nodes/{node}/qemu/{vmid}/status/current", (_p, path) => {
    const vm = vmOf(path);
    return { data: {
      vmid: vm.vmid, name: vm.config.name, status: vm.status, qmpstatus: vm.status, ha: { managed: 0 }, pid: vm.status === "running" ? 4242 : undefined,
      uptime: vm.startedAt && vm.status === "running" ? Math.floor((Date.now() - vm.startedAt) / 1000) : 0,
      ...(vm.config.lock ? { lock: vm.config.lock } : {}), ...(vm.config.agent ? { agent: 1 } : {}),
    } };
  });
  add("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", async (_p, path) => {
    const vm = vmOf(path);
    if (!vm.config.agent) throw new SimError(500, "No QEMU guest agent configured");
    if (vm.status !== "running") throw new SimError(500, `VM ${vm.vmid} is not running`);
    const qga = sim.qemuAgent(vm.vmid);
    if (qga) return { data: { result: await qga.call("guest-network-get-interfaces") } };
    if (vm.agentReadyAt === undefined || Date.now() < vm.agentReadyAt) {
      await sim.delay(3000);
      vm.agentFailedUntil = Date.now();
      throw new SimError(500, "QEMU guest agent is not running");
    }
    return { data: { result: [
      { name: "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
        { "ip-address": "127.0.0.1", "ip-address-type": "ipv4", prefix: 8 }, { "ip-address": "::1", "ip-address-type": "ipv6", prefix: 128 }] },
      { name: "eth0", "hardware-address": "bc:24:11:00:00:01", "ip-addresses": [
        { "ip-address": "fe80::be24:11ff:fe00:1", "ip-address-type": "ipv6", prefix: 64 },
        { "ip-address": await sim.agentAddress(vm.vmid).catch(() => { throw new SimError(500, "QEMU guest agent is not running"); }), "ip-address-type": "ipv4", prefix: 24 }] },
    ] } };
  });
  add("DELETE", "/nodes/{node}/qemu/{vmid}", (_p, path, who) => {
    const vm = vmOf(path);
    unlocked(vm);
    if (vm.status === "running") throw new SimError(500, `VM ${vm.vmid} is running - destroy failed`);
    return { data: sim.startTask("qmdestroy", String(vm.vmid), who, sim.faults.taskMs, [`Removing image: 100% complete...done.`], () => {
      sim.vms.delete(vm.vmid);
      sim.nodeOf(vm)?.wipe();
    }) };
  });

  add("GET", "/nodes/{node}/tasks/{upid}/status", (_p, path) => {
    checkNode(path.node!);
    const t = sim.tasks.get(path.upid!);
    if (!t) throw new SimError(400, "no such task");
    if (t.misses < sim.faults.freshTaskMisses) { t.misses++; throw new SimError(400, "no such task"); }
    const [user, tokenid] = t.user.split("!");
    return { data: {
      upid: t.upid, node: t.node, pid: t.pid, pstart: t.pstart, starttime: t.starttime, type: t.type, id: t.id, user,
      ...(tokenid ? { tokenid } : {}), status: t.status, ...(t.status === "stopped" ? { exitstatus: t.exitstatus } : {}),
    } };
  });
  add("GET", "/nodes/{node}/tasks/{upid}/log", (p, path) => {
    checkNode(path.node!);
    const t = sim.tasks.get(path.upid!);
    if (!t) throw new SimError(400, "no such task");
    const start = Number(p.start ?? 0);
    const limit = Number(p.limit ?? 50);
    const lines = t.log.slice(start, start + limit).map((text, i) => ({ n: start + i + 1, t: text }));
    return { data: lines, extra: { total: t.log.length } };
  });

  add("GET", "/storage/{storage}", (_p, path) => {
    const s = storageOf(path.storage!);
    return { data: { ...s, digest: sim.digest(s) } };
  });
  add("PUT", "/storage/{storage}", (p, path) => {
    const s = storageOf(path.storage!);
    if (p.digest !== undefined && p.digest !== sim.digest(s)) throw new SimError(500, "detected modified configuration - file changed by other user? Try again.");
    if (p.content !== undefined) {
      // `import` content exists from pve-storage 8.2 on.
      const old = /^([0-7]\.|8\.[01]\.)/.test(sim.release);
      const bad = p.content.split(",").filter((c) => !(STORAGE_CONTENT[s.type] ?? []).includes(c) || (old && c === "import"));
      if (bad.length) throw param400({ content: `storage does not support content type '${bad[0]}'` });
      s.content = p.content; // replaces the whole set
    }
    return { data: null };
  });
  add("GET", "/nodes/{node}/storage/{storage}/content", async (p, path) => {
    checkNode(path.node!);
    const s = storageOf(path.storage!);
    if (p.content !== "snippets" || !s.path || !s.content.split(",").includes("snippets")) return { data: [] };
    const files = await sim.fs.list(join(s.path, "snippets"));
    return { data: files.map((f) => (
      { volid: `${s.storage}:snippets/${f.name}`, format: "snippet", content: "snippets", size: f.size, ctime: Math.floor(f.ctimeMs / 1000) }
    )) };
  });

  // PVE's storage_info for one storage (bytes); the same numbers `pvesm status` prints in KiB.
  add("GET", "/nodes/{node}/storage/{storage}/status", (_p, path) => {
    checkNode(path.node!);
    const s = sim.storages.get(path.storage!);
    if (!s) throw param400({ storage: "No such storage." });
    const total = SIM_STORAGE_TOTAL_KIB * 1024;
    const avail = sim.faults.diskFreeKiB * 1024;
    return { data: { type: s.type, content: s.content, shared: 0, enabled: 1, active: 1, total, used: total - avail, avail } };
  });

  add("POST", "/access/users/{userid}/token/{tokenid}", (p, path) => {
    const full = `${path.userid}!${path.tokenid}`;
    if (sim.tokens.has(full)) throw param400({ tokenid: "Token already exists." });
    const value = randomUUID();
    sim.tokens.set(full, value);
    return { data: { "full-tokenid": full, info: { privsep: Number(p.privsep ?? 1), expire: Number(p.expire ?? 0), comment: p.comment }, value } };
  });
  add("DELETE", "/access/users/{userid}/token/{tokenid}", (_p, path) => {
    const full = `${path.userid}!${path.tokenid}`;
    if (!sim.tokens.delete(full)) throw new SimError(500, `no such token '${path.tokenid}' for user '${path.userid}'`);
    return { data: null };
  });
  return routes;
}
