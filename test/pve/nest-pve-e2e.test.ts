// End to end on the pve provider: `hsctl nest --depth 2 --provider pve --json`
// against the PVE simulator with real processes only, then status, then
// `hsctl destroy` leaving no VM, namespace or hsd process behind. Needs root.
//
// The setup, and why it keeps the provider honest (it runs on its defaults:
// the guest agent's address, SSH port 22, system paths at "/"):
// - Level 0 is `hsd run --root DIR` inside a mount + UTS namespace standing in
//   for a PVE node "pve1": hostname pve1, /etc an overlay holding /etc/hosts
//   and /etc/pve/local/pve-ssl.pem (the simulator's certificate), /sys/module
//   showing kvm_intel nested=Y. Its host commands are real executables on PATH
//   (test/pve-sim/sim-shim.mjs: pvesm/pveum/pvecm/qm ask the simulator's
//   control endpoint); `ip` is the real one against a real bridge.
// - One host bridge (random name and 10.79.N.0/24) is every level's pve.bridge;
//   the simulators' API listen on its address. A started VM (sim-vm.ts) is a
//   network namespace with eth0 on that bridge and its own bridge of the same
//   name (a PVE node's layout), and a mount namespace where /etc, /opt,
//   /usr/local and /var/lib are overlays, running a real sshd on <addr>:22;
//   its fake systemctl runs hsd.service's ExecStart (/usr/local/bin/hsd run),
//   i.e. the bundled hsd the provider installed, with system paths.
// - Level 1 and level 2 are PVE nodes too: each has its own simulator (node
//   "l1", "l2", no token yet) behind 127.0.0.1:8006 in its VM, its cert in
//   /etc/pve/local and pveum & co. in /usr/local/sbin. Level 1's VMs plug into
//   the bridge inside level 1's namespace, as nested VMs would. So the child's
//   pve url stays the product default (its own API on 127.0.0.1:8006).
// Product seam used: hsd.yaml pve.bundle (where the bundle comes from).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtemp, mkdir, writeFile, readFile, rm, copyFile, access, open, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { PveSim } from "../pve-sim/pve-sim.js";
import { runNetns, type VmNetwork } from "../pve-sim/sim-vm.js";
import { buildBundle, type BundleFixture } from "./bundle-fixture.js";
import { hsctl, jsonLines, hsdProcessesUnder, HSD } from "../helpers/hsctl.js";
import { readyFromPipe } from "../../src/util/ready-pipe.js";
import { schemaViolations } from "./helpers.js";

const SHIM = fileURLToPath(new URL("../pve-sim/sim-shim.mjs", import.meta.url));
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

const tag = `hp${randomBytes(2).toString("hex")}`;
const bridge = `${tag}br`;
const prefix = `10.79.${randomBytes(1)[0]! % 250}`;
const gateway = `${prefix}.1`;
const alloc = { next: 10 };
const net = (): VmNetwork => ({ bridge, prefix, gateway, alloc, tag });

let root = "";
let l0 = "";
let env: Record<string, string> = {};
let bundle: BundleFixture | undefined;
let bridgeMade = false;
const sims: PveSim[] = [];
let sim0: PveSim;
let simL1: PveSim;
let simL2: PveSim;
let level0: ChildProcess | undefined;
/** hsd pids seen while the tree was up (level 0 and the VMs' daemons). */
const hsdPids: number[] = [];

function alive(pid: number): boolean {
  try {
    const st = execFileSync("cat", [`/proc/${pid}/status`], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return !/^State:\s+Z/m.test(st);
  } catch { return false; }
}

/** Level 0 on its "PVE node": see the header. Resolves once it is ready (its readiness pipe). */
async function startLevel0(): Promise<ChildProcess> {
  const etc = join(root, "node0", "etc");
  await mkdir(join(etc, "pve/local"), { recursive: true });
  await mkdir(join(root, "node0", "work"), { recursive: true });
  await copyFile(sim0.paths.certFile, join(etc, "pve/local/pve-ssl.pem"));
  const hosts = await readFile("/etc/hosts", "utf8");
  await writeFile(join(etc, "hosts"), `${hosts.replace(/\n?$/, "\n")}${gateway} ${sim0.node}.${sim0.domain} ${sim0.node}\n`);
  const bin = join(root, "node0", "bin");
  await mkdir(bin, { recursive: true });
  for (const cmd of ["pveum", "pvesm", "pvecm", "qm"]) {
    await writeFile(join(bin, cmd), `#!/bin/sh\nexec ${q(process.execPath)} ${q(SHIM)} ${q(sim0.controlUrl)} ${cmd} "$@"\n`, { mode: 0o755 });
  }
  await mkdir(l0, { recursive: true, mode: 0o700 });
  await writeFile(join(l0, "hsd.yaml"), stringify({
    level: { name: "l0" },
    ssh: { host: "0.0.0.0", port: 0, advertise_host: gateway },
    nest: { provider: "pve" },
    pve: {
      url: sim0.url, node: sim0.node, token_id: sim0.tokenId, fingerprint: sim0.fingerprint, storage: "local-lvm",
      snippet_storage: "local", template: sim0.templateVmid, bridge, cores: 2, memory: 2048, bundle: bundle!.path,
    },
  }), { mode: 0o600 });
  await writeFile(join(l0, "secrets.yaml"), stringify({ pve: { token_secret: sim0.tokenSecret } }), { mode: 0o600 });
  const script = [
    "set -e",
    `echo ${q(sim0.node)} > /proc/sys/kernel/hostname`,
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
  hsdPids.push(ready.pid);
  return proc;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), "hsd-pve-e2e-"));
  l0 = join(root, "l0");
  env = { HSD_ROOT: l0 };
  bundle = await buildBundle();
  execFileSync("ip", ["link", "add", bridge, "type", "bridge"]);
  bridgeMade = true;
  execFileSync("ip", ["addr", "add", `${gateway}/24`, "dev", bridge]);
  execFileSync("ip", ["link", "set", bridge, "up"]);
  // The nodes of levels 2 and 1 first: a VM learns its node's address and certificate when it starts.
  simL2 = new PveSim({ node: "l2", host: gateway, presetToken: false, bridges: [bridge], vmNetwork: net() });
  simL1 = new PveSim({ node: "l1", host: gateway, presetToken: false, bridges: [bridge], vmNetwork: net(), nodeFor: (n) => (n === "hsd-l2" ? simL2 : undefined) });
  sim0 = new PveSim({ node: "pve1", host: gateway, bridges: [bridge], vmNetwork: net(), nodeFor: (n) => (n === "hsd-l1" ? simL1 : undefined) });
  for (const s of [simL2, simL1, sim0]) { sims.push(s); await s.start(); }
  level0 = await startLevel0();
});

after(async () => {
  if (level0?.exitCode === null) await hsctl(["destroy", "--json"], env, 90_000).catch(() => undefined);
  for (const pid of [...hsdPids, ...(root ? await hsdProcessesUnder(root) : [])]) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  if (level0 && level0.exitCode === null && level0.signalCode === null) level0.kill("SIGKILL");
  for (const s of sims.reverse()) await s.close().catch(() => undefined);
  for (const ns of runNetns(tag)) {
    try { execFileSync("ip", ["netns", "del", ns]); } catch { /* gone */ }
  }
  if (bridgeMade) { try { execFileSync("ip", ["link", "del", bridge]); } catch { /* gone */ } }
  await bundle?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

type Status = { name: string; state: string; address: string; provider: string; children: Status[] };

test("nest --depth 2 --provider pve: two nested VMs with the bundled hsd, task logs streamed as progress", async () => {
  const r = await hsctl(["nest", "--depth", "2", "--provider", "pve", "--json"], env, 280_000);
  const events = jsonLines(r.stdout);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${sims.flatMap((s) => s.guestErrors).join("\n")}\n${r.stdout.slice(-4000)}`);
  const ready = events.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level);
  assert.deepEqual(ready.sort(), ["l0/l1", "l0/l1/l2"]);

  // The clone task's own log lines arrive as progress of each level's provision.
  for (const level of ["l0/l1", "l0/l1/l2"]) {
    const lines = events.filter((e) => e.level === level && e.phase === "provision" && e.kind === "progress").map((e) => String(e.message ?? ""));
    assert.ok(lines.some((m) => /^qmclone 9000: create linked clone of drive scsi0/.test(m)), `${level}: ${JSON.stringify(lines)}`);
    assert.ok(lines.some((m) => m === "qmclone 9000: TASK OK"), level);
  }
  // Each PVE level set itself up in its configure phase (token via pveum, snippets, certificate).
  assert.ok(events.some((e) => e.level === "l0/l1" && e.phase === "configure" && /token: repaired - created root@pam!hsd/.test(e.message ?? "")));
  assert.ok(events.some((e) => e.level === "l0/l1/l2" && e.phase === "configure" && /token: repaired/.test(e.message ?? "")));

  // One VM per level, each on the node of the level above.
  const vm1 = [...sim0.vms.values()].find((v) => v.config.name === "hsd-l1");
  const vm2 = [...simL1.vms.values()].find((v) => v.config.name === "hsd-l2");
  assert.equal(vm1?.status, "running");
  assert.equal(vm2?.status, "running");
  assert.equal(vm1.config.cpu, "host");
  assert.ok(simL1.tokens.has("root@pam!hsd") && simL2.tokens.has("root@pam!hsd"), "levels 1 and 2 created their own API tokens");

  // Level 1 runs the installed bundle at system paths inside its VM, and holds the token secret it created.
  const up1 = join(sim0.guestRoot(vm1.vmid), "upper");
  const cfg1 = parse(await readFile(join(up1, "etc/homestak/hsd.yaml"), "utf8")) as Record<string, any>;
  assert.equal(cfg1.nest.provider, "pve");
  assert.equal(cfg1.pve.url, "https://127.0.0.1:8006");
  assert.equal(cfg1.pve.node, "l1");
  const sec1 = parse(await readFile(join(up1, "var/lib/hsd/secrets.yaml"), "utf8")) as Record<string, any>;
  assert.equal(sec1.pve.token_secret, simL1.tokens.get("root@pam!hsd"));
  // homestak's tools find each PVE level through its own site-config: exactly its own token under
  // api_tokens.<name> (0600) and nodes/<name>.yaml as homestak's generate_node_config writes it.
  const tokenOf = { l1: simL1.tokens.get("root@pam!hsd")!, l2: simL2.tokens.get("root@pam!hsd")! };
  for (const [sim, vm, name] of [[sim0, vm1, "l1"], [simL1, vm2, "l2"]] as const) {
    const up = join(sim.guestRoot(vm.vmid), "upper");
    const cfgDir = join(up, "var/lib/hsd/homestak/config");
    const cfg = parse(await readFile(join(up, "etc/homestak/hsd.yaml"), "utf8")) as Record<string, any>;
    assert.equal((await stat(join(cfgDir, "secrets.yaml"))).mode & 0o777, 0o600, name);
    const sec = parse(await readFile(join(cfgDir, "secrets.yaml"), "utf8")) as Record<string, any>;
    assert.deepEqual(sec.api_tokens, { [name]: `root@pam!hsd=${tokenOf[name]}` }, name);
    const node = parse(await readFile(join(cfgDir, "nodes", `${name}.yaml`), "utf8")) as Record<string, any>;
    assert.deepEqual(node, {
      node: name, host: name, api_endpoint: "https://localhost:8006", api_token: name, datastore: cfg.pve.storage, ip: await sim.agentAddress(vm.vmid),
    }, name);
    // No other level's token anywhere on this level's disk (level 0's included).
    const others = [sim0.tokenSecret, ...Object.entries(tokenOf).filter(([n]) => n !== name).map(([, t]) => t)];
    for (const t of others) {
      const hits = spawnSync("grep", ["-rlF", "--", t, up], { encoding: "utf8" });
      assert.equal(hits.stdout, "", `${name} holds another level's token in ${hits.stdout}`);
    }
  }
  for (const [sim, vm] of [[sim0, vm1], [simL1, vm2]] as const) {
    const rd = JSON.parse(await readFile(join(sim.guestRoot(vm.vmid), "upper/var/lib/hsd/run/ready.json"), "utf8")) as { pid: number };
    assert.ok(alive(rd.pid), `hsd in VM ${vm.config.name}`);
    assert.match(await readFile(`/proc/${rd.pid}/cmdline`, "utf8"), /\/opt\/hsd\/bin\/hsd\.js\0run/);
    hsdPids.push(rd.pid);
  }

  const s = await hsctl(["status", "--json"], env, 30_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout) as Status;
  const chain: Status[] = [];
  for (let n: Status | undefined = st; n; n = n.children[0]) chain.push(n);
  assert.deepEqual(chain.map((n) => n.name), ["l0", "l1", "l2"]);
  assert.deepEqual(chain.slice(1).map((n) => n.state), ["ready", "ready"]);
  // Each level is reached at its VM's own address (the guest agent's answer), port 2222.
  assert.equal(chain[1]!.address, `${await sim0.agentAddress(vm1.vmid)}:2222`);
  assert.equal(chain[2]!.address, `${await simL1.agentAddress(vm2.vmid)}:2222`);
});

test("destroy removes both VMs, their namespaces and every hsd process", async () => {
  const d = await hsctl(["destroy", "--json"], env, 120_000);
  assert.equal(d.code, 0, `${d.stderr}\n${d.stdout.slice(-3000)}`);
  await Promise.all(sims.map((s) => s.settled()));
  // Level 0 stops itself once the destroy stream has ended: wait for its exit, bounded.
  await new Promise<void>((resolve, reject) => {
    if (level0!.exitCode !== null || level0!.signalCode !== null) { resolve(); return; }
    const t = setTimeout(() => {
      void readFile(join(l0, "hsd.log"), "utf8").catch(() => "").then((log) =>
        reject(new Error(`level 0 hsd did not exit within 15 s of destroy; its log ends:\n${log.split("\n").slice(-15).join("\n")}`)));
    }, 15_000);
    level0!.once("exit", () => { clearTimeout(t); resolve(); });
  });
  for (const sim of [sim0, simL1]) assert.deepEqual([...sim.vms.keys()], [sim.templateVmid], sim.node);
  assert.deepEqual(runNetns(tag), []);
  assert.deepEqual(hsdPids.filter(alive).map((p) => `${p}: ${execFileSync("cat", [`/proc/${p}/cmdline`], { encoding: "utf8" })}`), []);
  assert.deepEqual(await hsdProcessesUnder(root), []);
  await assert.rejects(access(join(l0, "run", "hsd.sock")));
});

test("every (method, path, parameters) hsd sent to the three PVE nodes is valid in PVE's schema", (t) => {
  const calls = sims.flatMap((s) => s.requests);
  const endpoints = new Set(calls.map((r) => `${r.method} ${r.template}`));
  // The whole lifecycle went through the API: clone, config, start, agent, stop, delete, tasks, storage.
  for (const ep of ["POST /nodes/{node}/qemu/{vmid}/clone", "POST /nodes/{node}/qemu/{vmid}/config", "POST /nodes/{node}/qemu/{vmid}/status/start",
    "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", "DELETE /nodes/{node}/qemu/{vmid}", "GET /nodes/{node}/tasks/{upid}/status", "GET /storage/{storage}"]) {
    assert.ok(endpoints.has(ep), `${ep} was called (${[...endpoints].join(", ")})`);
  }
  assert.deepEqual(schemaViolations(calls), []);
  t.diagnostic(`${calls.length} calls to ${endpoints.size} endpoints checked against PVE's schema`);
});
