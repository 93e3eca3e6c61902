// End to end on the pve provider: a level made from an image WITHOUT Proxmox VE
// (debian-13) becomes a PVE node. `hsctl nest --depth 2 --provider pve` against
// the simulators with real processes (setup as in nest-pve-e2e.test.ts): l1 is
// cloned from a PVE template; l2, on l1, from l1's debian-13 template. l2's VM
// boots with no pveproxy, no /etc/pve/local certificate and no pveum; its
// configure runs the PVE install first (homestak's pve-config scenario, here the
// demo iac-driver's ensure_pve: kernel, reboot, packages); the VM reboots (its
// processes die, its disk stays, its enabled hsd comes back), l2 resumes the
// install step, l1 (itself a VM) re-attaches, and l2 then sets itself up as a
// node (its own token, node files). Destroy leaves nothing. Needs root.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, type ChildProcess } from "node:child_process";
import { lstat, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { parse } from "yaml";
import { PveSim } from "../pve-sim/pve-sim.js";
import { runNetns, type VmNetwork } from "../pve-sim/sim-vm.js";
import { buildBundle, type BundleFixture } from "./bundle-fixture.js";
import { hsctl, jsonLines, hsdProcessesUnder } from "../helpers/hsctl.js";
import { startPveLevel0 } from "./pve-level0.js";

const tag = `hr${randomBytes(2).toString("hex")}`;
const bridge = `${tag}br`;
const prefix = `10.78.${randomBytes(1)[0]! % 250}`;
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
const hsdPids: number[] = [];

const alive = async (pid: number) => (/^State:\s+([A-Z])/m.exec(await readFile(`/proc/${pid}/status`, "utf8").catch(() => ""))?.[1] ?? "Z") !== "Z";

before(async () => {
  root = await mkdtemp(join(tmpdir(), "hsd-pve-install-"));
  l0 = join(root, "l0");
  env = { HSD_ROOT: l0 };
  bundle = await buildBundle();
  execFileSync("ip", ["link", "add", bridge, "type", "bridge"]);
  bridgeMade = true;
  execFileSync("ip", ["addr", "add", `${gateway}/24`, "dev", bridge]);
  execFileSync("ip", ["link", "set", bridge, "up"]);
  simL2 = new PveSim({ node: "l2", host: gateway, presetToken: false, bridges: [bridge], vmNetwork: net() });
  // l1's template is plain Debian 13: its clones have no PVE until they install it.
  simL1 = new PveSim({
    node: "l1", host: gateway, presetToken: false, bridges: [bridge], vmNetwork: net(), templateName: "debian-13-tmpl", imagesWithoutPve: ["debian-13"],
    nodeFor: (n) => (n === "hsd-l2" ? simL2 : undefined),
  });
  sim0 = new PveSim({
    node: "pve1", host: gateway, bridges: [bridge], vmNetwork: net(), templateName: "pve-9-tmpl", imagesWithoutPve: ["debian-13"],
    nodeFor: (n) => (n === "hsd-l1" ? simL1 : undefined),
  });
  for (const s of [simL2, simL1, sim0]) { sims.push(s); await s.start(); }
  const l = await startPveLevel0({ root, l0, sim: sim0, bridge, gateway, bundle: bundle.path });
  level0 = l.proc;
  hsdPids.push(l.pid);
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

test("nest --depth 2 --provider pve, l2 from debian-13: l2 installs PVE with a reboot inside configure and ends a PVE node", async () => {
  const r = await hsctl(["nest", "--depth", "2", "--provider", "pve", "--json"], env, 400_000);
  const events = jsonLines(r.stdout);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${sims.flatMap((s) => s.guestErrors).join("\n")}\n${r.stdout.slice(-4000)}`);
  assert.deepEqual(events.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort(), ["l0/l1", "l0/l1/l2"]);
  // l1 came from a PVE image: no install, no reboot.
  const c1 = events.filter((e) => e.level === "l0/l1" && e.phase === "configure");
  assert.ok(!c1.some((e) => e.kind === "rebooting" || /pve-install/.test(e.message ?? "")), c1.map((e) => e.message).join("\n"));

  // One configure of l2: the install first (PVE absent), the reboot inside it, the resumed step, then the node set-up.
  const c = events.filter((e) => e.level === "l0/l1/l2" && e.phase === "configure");
  const at = (re: RegExp, kind = "log") => c.findIndex((e) => e.kind === kind && re.test(e.message ?? ""));
  const order = [
    at(/^pve-install: this level's image lacks its node software/),
    at(/pve-install\| ensure_pve: PVE kernel installed; rebooting into it/),
    at(/^step pve-install: ensure_pve: boot the PVE kernel$/, "rebooting"),
    at(/^l2 is rebooting; waiting for its hsd to come back$/),
    at(/^l2 is back after .* re-attaching to its configure$/),
    at(/^step pve-install: resumed after reboot 1$/),
    at(/pve-install\| ensure_pve: proxmox-ve installed after reboot 1/),
    at(/token: repaired - created root@pam!hsd/),
  ];
  assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!)), `configure out of order ${JSON.stringify(order)}:\n${c.map((e) => `${e.kind} ${e.message}`).join("\n")}`);
  assert.equal(c.filter((e) => e.kind === "started").length, 1);
  assert.equal(c.at(-1)!.kind, "finished");

  const vm1 = [...sim0.vms.values()].find((v) => v.config.name === "hsd-l1")!;
  const vm2 = [...simL1.vms.values()].find((v) => v.config.name === "hsd-l2")!;
  assert.equal(vm2.status, "running");
  assert.equal(simL1.reboots.get(vm2.vmid), 1, "l2's VM rebooted once");
  assert.equal(sim0.reboots.get(vm1.vmid), undefined, "l1's VM did not reboot");
  const groot = simL1.guestRoot(vm2.vmid);
  const up = join(groot, "upper");
  // The packages went in as homestak installs them: the kernel, then (under it, after the reboot) proxmox-ve.
  const apt = (await readFile(join(groot, "apt.log"), "utf8")).trim().split("\n");
  assert.deepEqual(apt.map((l) => l.replace(/^apt-get install -y /, "")), ["proxmox-default-kernel", "proxmox-ve"]);
  assert.ok((await stat(join(up, "etc/pve/local/pve-ssl.pem"))).isFile(), "PVE's certificate is on the VM's disk");
  assert.ok((await lstat(join(up, "etc/systemd/system/multi-user.target.wants/hsd.service"))).isSymbolicLink(), "hsd is enabled");

  // l2's journal: the install step resumed once (not the phase list), the demo step after it ran once.
  const journal = JSON.parse(await readFile(join(up, "var/lib/hsd/state/journal.json"), "utf8"));
  assert.equal(journal.steps["pve-install"].kind, "finished");
  assert.equal(journal.steps["pve-install"].reboots, 1);
  assert.equal(journal.steps["pve-config"].kind, "finished");
  assert.equal(c.filter((e) => /^step pve-config: \.\/run\.sh/.test(e.message ?? "")).length, 1);

  // A PVE node now: its own token (held in its own secrets) and homestak's node file.
  const token = simL2.tokens.get("root@pam!hsd");
  assert.ok(token, "l2 created its own API token");
  const sec = parse(await readFile(join(up, "var/lib/hsd/secrets.yaml"), "utf8")) as Record<string, any>;
  assert.equal(sec.pve.token_secret, token);
  const node = parse(await readFile(join(up, "var/lib/hsd/homestak/config/nodes/l2.yaml"), "utf8")) as Record<string, any>;
  assert.equal(node.node, "l2");

  // The hsd serving l2 now is the one its boot started (the bundle, system paths), pinned key unchanged.
  const rd = JSON.parse(await readFile(join(up, "var/lib/hsd/run/ready.json"), "utf8")) as { pid: number; hostKeyFingerprint: string };
  assert.ok(await alive(rd.pid));
  assert.match(await readFile(`/proc/${rd.pid}/cmdline`, "utf8"), /\/opt\/hsd\/bin\/hsd\.js\0run/);
  hsdPids.push(rd.pid);
  const l1journal = JSON.parse(await readFile(join(sim0.guestRoot(vm1.vmid), "upper/var/lib/hsd/state/journal.json"), "utf8"));
  assert.equal(l1journal.children.l2.endpoint.hostKeyFingerprint, rd.hostKeyFingerprint);
  const rd1 = JSON.parse(await readFile(join(sim0.guestRoot(vm1.vmid), "upper/var/lib/hsd/run/ready.json"), "utf8")) as { pid: number };
  hsdPids.push(rd1.pid);

  const s = await hsctl(["status", "--json"], env, 30_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout);
  assert.deepEqual([st.children[0].state, st.children[0].children[0].state], ["ready", "ready"]);
});

test("destroy removes both VMs, their namespaces and every hsd process", async () => {
  const d = await hsctl(["destroy", "--json"], env, 120_000);
  assert.equal(d.code, 0, `${d.stderr}\n${d.stdout.slice(-3000)}`);
  await Promise.all(sims.map((s) => s.settled()));
  for (const sim of [sim0, simL1]) assert.deepEqual([...sim.vms.keys()], [sim.templateVmid], sim.node);
  assert.deepEqual(runNetns(tag), []);
  // The VM's hsd (level 0's own stops after the stream; after() reaps it).
  const left = [];
  for (const p of hsdPids.slice(1)) if (await alive(p)) left.push(p);
  assert.deepEqual(left, []);
});
