// `hsctl nest --depth 3 --provider pve` on simulated PVE nodes run by real
// processes (pve-tree.ts), in issue 13's shape, as one run: level 0 holds
// pve-9 (PVE preinstalled) and debian-13 (no PVE); l1 is made from pve-9, l2
// from debian-13 (the PVE install with a reboot inside its configure), l3 from
// pve-9 again: level 0's pve.image is the list [pve-9, debian-13, pve-9], one
// image per depth (docs/proxmox.md, "An image per depth").
// - no node has a template: level 0 makes its own from pve-9 in preflight;
// - each level received both images from its parent over hsd's SSH endpoint
//   into its VM's /var/lib/vz/template/iso, which is its PVE's `local` storage;
// - each level ran its own preflight (template vmid free, room for the
//   template and a clone), created template 9000 in configure from its own
//   copy of the image its child is made from, and cloned its child from it;
// - l2's VM boots without pveproxy, certificate or pveum; its configure runs
//   the install (kernel, reboot, proxmox-ve): its processes die, its disk
//   stays, its enabled hsd comes back and resumes the step, l1 re-attaches,
//   and both the --json events and the plain view show the reboot inside
//   l2's one configure; l2 then sets itself up as a node (its own token);
// - nothing was fetched from anywhere else: no node was asked to download,
//   every call fits PVE's schema, and the VMs have no default route (they
//   reach the bridge's /24 only: VmNetwork.isolated);
// - destroy leaves no VM and no hsd-made template below level 0; level 0's
//   template stays as it was (destroy never touches it).
// Needs root.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { lstat, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { parse } from "yaml";
import type { PveSim, SimVm } from "../pve-sim/pve-sim.js";
import { hsctl, jsonLines } from "../helpers/hsctl.js";
import { NestView } from "../../src/cli/nest-view.js";
import type { LevelEvent } from "../../src/domain/events.js";
import { schemaViolations } from "./helpers.js";
import { alive, destroyTree, startPveTree, vmNamed, type PveTree } from "./pve-tree.js";
import { keepLogsOnFailure } from "./tree-logs.js";

const LEVELS = ["l1", "l2", "l3"] as const;
/** The image each level's VM is made from: level 0's pve.image, one entry per depth. */
const MADE_FROM: Record<(typeof LEVELS)[number], string> = { l1: "pve-9", l2: "debian-13", l3: "pve-9" };
const IMAGE_LIST = LEVELS.map((l) => MADE_FROM[l]);
/** The image of level n's template (what its children are cloned from): the list's entry n, the last one going on below. */
const templateImage = (n: number) => IMAGE_LIST[Math.min(n, IMAGE_LIST.length - 1)]!;
const IMAGES = [{ name: "pve-9", bytes: 3 << 20, pinSha256: true }, { name: "debian-13", bytes: 1 << 20 }];
const TEMPLATE = 9000;

let tree: PveTree;
let sims: readonly PveSim[] = [];
type Ev = ReturnType<typeof jsonLines>[number];
let events: Ev[] = [];
/** Level 0's template as its preflight made it. */
let level0Template: Record<string, string> = {};
/** Each level's template as it stood while the tree was up. */
const madeTemplates = new Map<string, SimVm>();
/** The VM each node held for the level below it. */
const childVmid = new Map<string, number>();

before(async () => {
  tree = await startPveTree({
    depth: 3, prefix: "hsd-pve-img-", images: IMAGES, image: IMAGE_LIST, presetTemplates: "none", isolatedVms: true,
    // A VM made from debian-13 has no PVE until its install ran (sim-reboot.ts).
    simOptions: () => ({ imagesWithoutPve: ["debian-13"] }),
  });
  sims = tree.sims;
});

keepLogsOnFailure(() => tree);
after(async () => { await tree?.close(); });

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const pathOf = (n: number) => ["l0", ...LEVELS.slice(0, n + 1)].join("/");

test("nest --depth 3 --provider pve, l1/l2/l3 from pve-9/debian-13/pve-9: each level gets its images from its parent, builds its template from them, and clones its child from it", async () => {
  for (const s of sims) assert.equal(s.vms.size, 0, `${s.node} starts without any VM or template`);
  const r = await hsctl(["nest", "--depth", "3", "--provider", "pve", "--json"], tree.env, 290_000);
  events = jsonLines(r.stdout);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${sims.flatMap((s) => s.guestErrors).join("\n")}\n${r.stdout.slice(-4000)}`);
  assert.deepEqual(events.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort(),
    ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);

  for (const [n, level] of LEVELS.entries()) {
    const path = pathOf(n);
    const parentSim = sims[n]!;
    const sim = sims[n + 1]!;
    const vm = vmNamed(parentSim, level)!;
    assert.equal(vm?.status, "running", `${level} runs on ${parentSim.node}`);
    // Its VM is a clone of its parent's template of the image it is made from.
    assert.match(parentSim.vms.get(TEMPLATE)?.config.description ?? "", new RegExp(`hsd-image=${MADE_FROM[level]}@`), `${level} made from ${MADE_FROM[level]}`);

    // Its images came from its parent's hsd, whole, during its sync, into its VM's iso directory.
    for (const img of IMAGES) {
      const done = events.filter((e) => e.level === path && e.phase === "sync" && e.kind === "progress"
        && new RegExp(`^${img.name}: (\\d+\\.\\d) of \\1 MiB`).test(e.message ?? ""));
      assert.ok(done.length >= 1, `${path} reported no finished ${img.name} transfer`);
      const got: Buffer = await readFile(join(parentSim.guestRoot(vm.vmid), "upper/var/lib/vz/template/iso", `${img.name}.img`));
      assert.equal(sha256(got), tree.images.get(img.name)!.sha256, `${level}: ${img.name}`);
    }

    // Its template: made in its configure phase from its own copy of the image, on its own node.
    const image = templateImage(n + 1);
    const t = sim.vms.get(TEMPLATE);
    assert.equal(t?.config.template, "1", `${sim.node} has template ${TEMPLATE}`);
    assert.match(t.config.description ?? "", new RegExp(`hsd-image=${image}@${tree.images.get(image)!.sha256}`));
    assert.equal(t.config.name, `hsd-${image}`);
    assert.match(t.config.scsi0 ?? "", new RegExp(`^local-lvm:base-${TEMPLATE}-disk-0,`));
    assert.equal(t.config.agent, "1");
    assert.equal(t.config.serial0, "socket");
    assert.match(t.config.ide2 ?? "", /cloudinit/);
    assert.deepEqual(sim.imports, [{ vmid: TEMPLATE, file: `/var/lib/vz/import/${image}.raw` }], sim.node);
    // Its own preflight ran first: the vmid free, and room for the template and a clone.
    for (const check of ["template-slot", "storage-room"]) {
      assert.ok(events.some((e) => e.level === path && e.phase === "configure" && (e.message ?? "").startsWith(`${check}: ok`)), `${path}: ${check}`);
    }
    assert.ok(events.some((e) => e.level === path && e.phase === "configure" && new RegExp(`^creating template ${TEMPLATE} from image ${image}`).test(e.message ?? "")),
      `${path} created its template in configure`);
    madeTemplates.set(sim.node, { ...t, config: { ...t.config } });
  }

  // Each level cloned its child from the template it built: the node had no
  // template before, created and templated 9000, then cloned it.
  for (const [n, sim] of sims.slice(0, LEVELS.length).entries()) {
    const calls = sim.requests.filter((q) => q.status === 200).map((q) => `${q.method} ${q.path}`);
    const clone = calls.indexOf(`POST /nodes/${sim.node}/qemu/${TEMPLATE}/clone`);
    assert.ok(clone >= 0, `${sim.node} cloned ${TEMPLATE}: ${calls.join(", ")}`);
    const made = calls.indexOf(`POST /nodes/${sim.node}/qemu/${TEMPLATE}/template`);
    assert.ok(made >= 0 && made < clone, `${sim.node} made template ${TEMPLATE} before cloning it`);
    const child = vmNamed(sim, LEVELS[n]!);
    childVmid.set(sim.node, child!.vmid);
    assert.match(child!.config.scsi0 ?? "", new RegExp(`^local-lvm:base-${TEMPLATE}-disk-0/vm-${child!.vmid}-disk-0`));
  }
  // Level 0 made its template from its own file of pve.image's first entry in its preflight, before the first clone.
  const t0 = sims[0]!.vms.get(TEMPLATE)!;
  assert.equal(t0.config.template, "1");
  assert.match(t0.config.description ?? "", new RegExp(`hsd-image=${MADE_FROM.l1}@${tree.images.get(MADE_FROM.l1)!.sha256}`));
  assert.deepEqual(sims[0]!.imports, [{ vmid: TEMPLATE, file: join(sims[0]!.paths.vz, "import", `${MADE_FROM.l1}.raw`) }]);
  assert.ok(events.some((e) => e.level === "l0/l1" && e.phase === "preflight" && new RegExp(`^template: repaired - made template ${TEMPLATE} from image`).test(e.message ?? "")));
  level0Template = { ...t0.config };

  const s = await hsctl(["status", "--json"], tree.env, 30_000);
  assert.equal(s.code, 0, s.stderr);
  type Status = { name: string; state: string; children: Status[] };
  const chain: Status[] = [];
  for (let st: Status | undefined = JSON.parse(s.stdout) as Status; st; st = st.children[0]) chain.push(st);
  assert.deepEqual(chain.map((c) => `${c.name}:${c.state}`).slice(1), ["l1:ready", "l2:ready", "l3:ready"]);
});

test("l2, from debian-13, installed PVE with a reboot inside its one configure, resumed the step and ended a PVE node; l1 and l3 did not reboot", async () => {
  assert.ok(events.length > 0, "the tree test ran");
  const [sim0, simL1, simL2, simL3] = sims as [PveSim, PveSim, PveSim, PveSim];
  // l1 and l3 came from pve-9: no install, no reboot.
  for (const path of [pathOf(0), pathOf(2)]) {
    const c = events.filter((e) => e.level === path && e.phase === "configure");
    assert.ok(c.length > 0 && !c.some((e) => e.kind === "rebooting" || /pve-install/.test(e.message ?? "")), `${path}:\n${c.map((e) => e.message).join("\n")}`);
  }

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

  // The plain view the operator gets when piped, of this very stream: the reboot is a line of l2's configure, between its start and end.
  const out = new PassThrough();
  let plain = "";
  out.on("data", (b: Buffer) => { plain += b.toString(); });
  const view = new NestView("plain", out, () => 0);
  for (const e of events) {
    view.onEvent({
      levelPath: e.levelPath as string[], phase: e.phase, kind: e.kind, time: Date.parse(e.time as string),
      ...(e.message ? { message: e.message } : {}), ...(e.durationMs !== undefined ? { durationMs: e.durationMs } : {}),
      ...(e.budgetMs !== undefined ? { budgetMs: e.budgetMs } : {}),
    } as LevelEvent);
  }
  view.finish();
  const lines = plain.split("\n");
  const pl = (re: RegExp) => lines.findIndex((l) => re.test(l));
  const plainOrder = [
    pl(/^l0\/l1\/l2\s+configure\s+started\b/),
    pl(/^l0\/l1\/l2\s+configure\s+rebooting\s+step pve-install: ensure_pve: boot the PVE kernel$/),
    pl(/^l0\/l1\/l2\s+configure\s+finished\b/),
  ];
  assert.ok(plainOrder.every((i, k) => i >= 0 && (k === 0 || i > plainOrder[k - 1]!)), `plain view ${JSON.stringify(plainOrder)}:\n${plain}`);
  assert.equal(lines.filter((l) => /^l0\/l1\/l2\s+configure\s+started\b/.test(l)).length, 1, plain);

  const vm1 = vmNamed(sim0, "l1")!;
  const vm2 = vmNamed(simL1, "l2")!;
  const vm3 = vmNamed(simL2, "l3")!;
  assert.equal(vm2.status, "running");
  assert.equal(simL1.reboots.get(vm2.vmid), 1, "l2's VM rebooted once");
  assert.equal(sim0.reboots.get(vm1.vmid), undefined, "l1's VM did not reboot");
  assert.equal(simL2.reboots.get(vm3.vmid), undefined, "l3's VM did not reboot");
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
  // l2's own level config: pve.image is what its children are made from, the rest of level 0's list.
  const cfg2 = parse(await readFile(join(up, "etc/homestak/hsd.yaml"), "utf8")) as Record<string, any>;
  assert.equal(cfg2.pve.image, MADE_FROM.l3);
  assert.equal(simL3.vms.get(TEMPLATE)?.config.name, `hsd-${templateImage(3)}`);

  // The hsd serving l2 now is the one its boot started (the bundle, system paths), pinned key unchanged.
  const rd = JSON.parse(await readFile(join(up, "var/lib/hsd/run/ready.json"), "utf8")) as { pid: number; hostKeyFingerprint: string };
  assert.ok(alive(rd.pid));
  assert.match(await readFile(`/proc/${rd.pid}/cmdline`, "utf8"), /\/opt\/hsd\/bin\/hsd\.js\0run/);
  tree.hsdPids.push(rd.pid);
  const l1journal = JSON.parse(await readFile(join(sim0.guestRoot(vm1.vmid), "upper/var/lib/hsd/state/journal.json"), "utf8"));
  assert.equal(l1journal.children.l2.endpoint.hostKeyFingerprint, rd.hostKeyFingerprint);
  for (const [sim, vm] of [[sim0, vm1], [simL2, vm3]] as const) {
    const rdx = JSON.parse(await readFile(join(sim.guestRoot(vm.vmid), "upper/var/lib/hsd/run/ready.json"), "utf8")) as { pid: number };
    tree.hsdPids.push(rdx.pid);
  }
});

test("nothing was fetched from anywhere else: no node was asked for a URL, every call fits PVE's schema, and no VM has a route off the bridge", async () => {
  assert.ok(events.length > 0, "the tree test ran");
  const calls = sims.flatMap((s) => s.requests);
  // The simulator has no download route (download-url, or anything outside the schema answers 501 and is recorded).
  assert.deepEqual(calls.filter((c) => /download|url/i.test(c.path) || c.status === 501).map((c) => `${c.method} ${c.path}`), []);
  assert.deepEqual(schemaViolations(calls), []);
  // Every VM (l1, l2, l3) reaches its bridge's /24 and nothing else: no default route, so any address off it is unreachable.
  const namespaces = (await Promise.all(sims.map((s) => s.vmNamespaces))).flat();
  assert.equal(namespaces.length, LEVELS.length);
  for (const ns of namespaces) {
    assert.equal(execFileSync("ip", ["-n", ns, "route", "show", "default"], { encoding: "utf8" }).trim(), "", ns);
    assert.throws(() => execFileSync("ip", ["-n", ns, "route", "get", "1.1.1.1"], { stdio: "pipe" }), /unreachable/i, ns);
  }
});

test("destroy removes every VM and every template below level 0; level 0's template is untouched", async () => {
  assert.equal(madeTemplates.size, LEVELS.length, "the tree test ran");
  await destroyTree(tree, 180_000);
  assert.deepEqual([...sims[0]!.vms.keys()], [TEMPLATE]);
  assert.deepEqual(sims[0]!.vms.get(TEMPLATE)!.config, level0Template);
  // Each lower level's template lived on its node, i.e. in its VM's disk: gone with the VM.
  for (const sim of sims.slice(1)) assert.deepEqual([...sim.vms.keys()], [], sim.node);
  // Each level deleted its child's VM through its node's API (before its own VM went), and nothing else.
  for (const sim of sims.slice(0, LEVELS.length)) {
    const deletes = sim.requests.filter((q) => q.method === "DELETE" && q.status === 200).map((q) => q.path);
    assert.deepEqual(deletes, [`/nodes/${sim.node}/qemu/${childVmid.get(sim.node)}`], sim.node);
  }
});
