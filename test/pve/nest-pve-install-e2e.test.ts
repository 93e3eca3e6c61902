// End to end on the pve provider: a level made from an image WITHOUT Proxmox VE
// (debian-13) becomes a PVE node. `hsctl nest --depth 2 --provider pve` against
// the simulators with real processes (the tree of pve-tree.ts): l1 is
// cloned from a PVE template; l2, on l1, from l1's debian-13 template. l2's VM
// boots with no pveproxy, no /etc/pve/local certificate and no pveum; its
// configure runs the PVE install first (homestak's pve-config scenario, here the
// demo iac-driver's ensure_pve: kernel, reboot, packages); the VM reboots (its
// processes die, its disk stays, its enabled hsd comes back), l2 resumes the
// install step, l1 (itself a VM) re-attaches, and l2 then sets itself up as a
// node (its own token, node files). Destroy leaves nothing. Needs root.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { lstat, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import type { PveSim } from "../pve-sim/pve-sim.js";
import { hsctl, jsonLines } from "../helpers/hsctl.js";
import { alive, destroyTree, startPveTree, vmNamed, type PveTree } from "./pve-tree.js";

let tree: PveTree;
let env: Record<string, string> = {};
let sims: readonly PveSim[] = [];
let sim0: PveSim;
let simL1: PveSim;
let simL2: PveSim;

before(async () => {
  // l1's template is plain Debian 13: its clones have no PVE until they install it.
  tree = await startPveTree({
    depth: 2, prefix: "hsd-pve-install-",
    simOptions: (n) => (n === 1 ? { templateName: "debian-13-tmpl", imagesWithoutPve: ["debian-13"] } : {}),
  });
  ({ env, sims } = tree);
  [sim0, simL1, simL2] = sims as [PveSim, PveSim, PveSim];
});

after(async () => { await tree?.close(); });

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

  const vm1 = vmNamed(sim0, "l1")!;
  const vm2 = vmNamed(simL1, "l2")!;
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
  assert.ok(alive(rd.pid));
  assert.match(await readFile(`/proc/${rd.pid}/cmdline`, "utf8"), /\/opt\/hsd\/bin\/hsd\.js\0run/);
  tree.hsdPids.push(rd.pid);
  const l1journal = JSON.parse(await readFile(join(sim0.guestRoot(vm1.vmid), "upper/var/lib/hsd/state/journal.json"), "utf8"));
  assert.equal(l1journal.children.l2.endpoint.hostKeyFingerprint, rd.hostKeyFingerprint);
  const rd1 = JSON.parse(await readFile(join(sim0.guestRoot(vm1.vmid), "upper/var/lib/hsd/run/ready.json"), "utf8")) as { pid: number };
  tree.hsdPids.push(rd1.pid);

  const s = await hsctl(["status", "--json"], env, 30_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout);
  assert.deepEqual([st.children[0].state, st.children[0].children[0].state], ["ready", "ready"]);
});

test("destroy removes both VMs, their namespaces and every hsd process", async () => {
  await destroyTree(tree);
  assert.deepEqual([...sim0.vms.keys()], [sim0.templateVmid]);
  // Level 1's node was VM hsd-l1: what level 1 made on it went with that VM.
  assert.deepEqual([...simL1.vms.keys()], []);
});
