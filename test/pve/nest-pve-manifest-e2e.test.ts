// `hsctl nest -M n3-deep` on simulated PVE nodes run by real processes
// (pve-tree.ts): the demo site-config's n3-deep, root-pve (pve-9, vm-large,
// disk 64, vmid 99011) -> leaf-pve (pve-9, vm-medium, 99021) -> edge (a vm
// leaf: debian-12, vm-small, 99031). Mixed images, fixed vmids:
// - level 0 holds pve-9 and debian-12; root-pve is passed both (its subtree
//   uses both), leaf-pve only debian-12 (what edge is made from);
// - root-pve makes pve-9's template (its pve.image) in configure and clones
//   leaf-pve from it; leaf-pve, which holds only debian-12, takes it as its
//   pve.image, makes its template in configure and clones edge from it;
// - each VM has its vmid, its preset's cores and memory and its disk;
// - edge gets no hsd: leaf-pve boots it and runs its configure step against it
//   over SSH with its own key (the step writes a file on edge);
// - status shows every node at its place; sync --configure reaches the leaf;
// - n1-push beside it: level 0 makes debian-12's template in its template
//   block (9001; 9000 is the operator's) and its own leaf edge from it;
// - destroy -M n3-deep removes exactly that tree: n1-push's edge, level 0's
//   templates and level 0 itself stay. Needs root.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import type { PveSim } from "../pve-sim/pve-sim.js";
import { runNetns } from "../pve-sim/sim-vm.js";
import { hsctl, jsonLines, hsdProcessesUnder } from "../helpers/hsctl.js";
import { schemaViolations } from "./helpers.js";
import { alive, startPveTree, vmHsdPid, vmNamed, type PveTree } from "./pve-tree.js";
import { keepLogsOnFailure } from "./tree-logs.js";

const TEMPLATE = 9000;
const GiB = (n: number) => new RegExp(`,size=${n}G(,|$)`);
/**
 * The operator's configure step: on a level, a note; against a leaf, what
 * homestak's config-apply does in spirit, over SSH as root with the level's
 * own key (cloud-init authorized it): edge records who configured it, one line a run.
 */
const STEP = [
  "if [ \"$HSD_LEAF\" = 1 ]; then",
  // The level's own key: under level 0's root (next to its homestak root), or a PVE level's system path.
  "  k=\"$(dirname \"$HOMESTAK_ROOT\")/keys/id_ed25519\"; [ -r \"$k\" ] || k=/var/lib/hsd/keys/id_ed25519",
  "  ssh -i \"$k\" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 \\",
  "    root@\"$HSD_TARGET\" \"mkdir -p /var/lib/leaf && echo $HSD_LEVEL_PATH $HSD_SPEC $HSD_MANIFEST >> /var/lib/leaf/configured\"",
  "  echo \"leaf $HSD_LEVEL_NAME configured at $HSD_TARGET\"",
  "else echo \"level $HSD_LEVEL_NAME spec $HSD_SPEC\"; fi",
].join("\n");

let tree: PveTree;
let sims: readonly PveSim[] = [];
let built = false;

before(async () => {
  tree = await startPveTree({
    depth: 2, names: ["root-pve", "leaf-pve"], prefix: "hsd-pve-n3-", presetTemplates: "level0", image: "pve-9",
    images: [{ name: "pve-9", bytes: 2 << 20, pinSha256: true }, { name: "debian-12", bytes: 1 << 20 }],
    extraConfig: { configure: { steps: [{ name: "apply", run: ["sh", "-c", STEP], cwd: "iac-driver" }] } },
  });
  sims = tree.sims;
});

keepLogsOnFailure(() => tree);
after(async () => { await tree?.close(); });

type Status = { name: string; state: string; leaf?: boolean; manifest?: string; children: Status[] };

test("nest -M n3-deep on PVE: every node on its parent's node with its image's template, vmid, size and disk; edge configured over SSH", async () => {
  const r = await hsctl(["nest", "-M", "n3-deep", "--json"], tree.env, 480_000);
  const events = jsonLines(r.stdout);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${sims.flatMap((s) => s.guestErrors).join("\n")}\n${r.stdout.slice(-4000)}`);
  assert.deepEqual(events.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort(), ["l0/root-pve", "l0/root-pve/leaf-pve"]);
  const edgePath = "l0/root-pve/leaf-pve/edge";
  assert.deepEqual([...new Set(events.filter((e) => e.level === edgePath && e.kind === "finished").map((e) => e.phase))],
    ["preflight", "provision", "boot", "configure"]);

  const [pve1, rootNode, leafNode] = sims as [PveSim, PveSim, PveSim];
  const root = vmNamed(pve1, "root-pve")!;
  const leaf = vmNamed(rootNode, "leaf-pve")!;
  const edge = vmNamed(leafNode, "edge")!;
  // Fixed vmids, preset sizes (vm-large 4/8192, vm-medium 2/4096, vm-small 2/2048), disks (64 given; presets 20 and 10).
  assert.deepEqual([root.vmid, root.config.cores, root.config.memory], [99011, "4", "8192"]);
  assert.deepEqual([leaf.vmid, leaf.config.cores, leaf.config.memory], [99021, "2", "4096"]);
  assert.deepEqual([edge.vmid, edge.config.cores, edge.config.memory], [99031, "2", "2048"]);
  assert.match(root.config.scsi0!, GiB(64));
  assert.match(leaf.config.scsi0!, GiB(20));
  assert.match(edge.config.scsi0!, GiB(10));
  assert.deepEqual([root.status, leaf.status, edge.status], ["running", "running", "running"]);

  // Templates: level 0's own for pve-9; root-pve made pve-9's from what it received; leaf-pve debian-12's.
  const sha = (n: string) => tree.images.get(n)!.sha256;
  const cloned = (s: PveSim) => s.requests.filter((q) => q.method === "POST" && q.template === "/nodes/{node}/qemu/{vmid}/clone" && q.status === 200)
    .map((q) => `${q.params!.vmid}->${q.params!.newid}`);
  assert.deepEqual(cloned(pve1), [`${TEMPLATE}->99011`]);
  assert.deepEqual(cloned(rootNode), [`${TEMPLATE}->99021`]);
  assert.deepEqual(cloned(leafNode), [`${TEMPLATE}->99031`]);
  assert.match(rootNode.vms.get(TEMPLATE)!.config.description!, new RegExp(`hsd-image=pve-9@${sha("pve-9")}`));
  assert.match(leafNode.vms.get(TEMPLATE)!.config.description!, new RegExp(`hsd-image=debian-12@${sha("debian-12")}`));
  assert.deepEqual(rootNode.imports.map((i) => i.file), ["/var/lib/vz/import/pve-9.raw"]);
  assert.deepEqual(leafNode.imports.map((i) => i.file), ["/var/lib/vz/import/debian-12.raw"]);
  assert.deepEqual(pve1.imports, []);

  // Each child holds exactly the images of the nodes below it.
  const held = async (s: PveSim, vmid: number) => {
    const cfg = parse(await readFile(join(s.guestRoot(vmid), "upper/etc/homestak/hsd.yaml"), "utf8")) as { images?: Record<string, unknown> };
    const files = (await readdir(join(s.guestRoot(vmid), "upper/var/lib/vz/template/iso")).catch(() => [] as string[])).sort();
    return [Object.keys(cfg.images ?? {}).sort(), files];
  };
  // Beside them, the boot CD of each child that runs hsd (leaf-pve's on root-pve); a leaf VM (edge) gets none.
  assert.deepEqual(await held(pve1, 99011), [["debian-12", "pve-9"], ["debian-12.img", "hsd-99021.iso", "pve-9.img"]]);
  assert.deepEqual(await held(rootNode, 99021), [["debian-12"], ["debian-12.img"]]);

  // edge has no hsd; leaf-pve's step reached it over SSH and wrote there.
  assert.equal(await readFile(join(leafNode.guestRoot(99031), "upper/opt/hsd/bin/hsd.js")).then(() => true, () => false), false);
  // (A PVE level's HSD_LEVEL_PATH starts at itself: its service is not told the path above it.)
  assert.equal((await readFile(join(leafNode.guestRoot(99031), "upper/var/lib/leaf/configured"), "utf8")).trim(), "leaf-pve/edge base n3-deep");
  const edgeAddress = await leafNode.agentAddress(99031);
  assert.ok(events.some((e) => e.level === edgePath && e.phase === "configure" && (e.message ?? "").includes(`leaf edge configured at ${edgeAddress}`)));

  const s = await hsctl(["status", "--json"], tree.env, 30_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout) as Status;
  const places: string[] = [];
  const walk = (n: Status, p: string) => { for (const c of n.children) { places.push(`${p}/${c.name}:${c.state}${c.leaf ? ":leaf" : ""}:${c.manifest}`); walk(c, `${p}/${c.name}`); } };
  walk(st, "l0");
  assert.deepEqual(places, ["l0/root-pve:ready:n3-deep", "l0/root-pve/leaf-pve:ready:n3-deep", `${edgePath}:ready:leaf:n3-deep`]);
  for (const [sim, vmid] of [[pve1, 99011], [rootNode, 99021]] as const) assert.ok(alive(await vmHsdPid(tree, sim, vmid)));
  built = true;
});

let beside = false;
test("nest -M n1-push beside it: a leaf of level 0 from debian-12's template, made in level 0's template block", async () => {
  assert.ok(built, "the tree test ran");
  const pve1 = sims[0]!;
  const operator = structuredClone(pve1.vms.get(TEMPLATE)!.config);
  const r = await hsctl(["nest", "-M", "n1-push", "--json"], tree.env, 240_000);
  assert.equal(r.code, 0, `${r.stderr}\n${r.stdout.slice(-3000)}`);
  // pve.image (pve-9) is level 0's template 9000; debian-12's goes to the block's lowest free vmid, 9001.
  const t = pve1.vms.get(TEMPLATE + 1)!;
  assert.deepEqual([t.config.template, t.config.name], ["1", "hsd-debian-12"]);
  assert.match(t.config.description!, new RegExp(`hsd-image=debian-12@${tree.images.get("debian-12")!.sha256}`));
  assert.deepEqual(pve1.imports.map((i) => i.file), [join(pve1.paths.vz, "import", "debian-12.raw")]);
  assert.deepEqual(pve1.vms.get(TEMPLATE)!.config, operator, "level 0's own template untouched");
  const edge = pve1.vms.get(99001)!;
  assert.deepEqual([edge.config.name, edge.status], ["hsd-edge", "running"]);
  assert.match(edge.config.scsi0!, new RegExp(`^local-lvm:base-${TEMPLATE + 1}-disk-0/vm-99001-disk-0,.*size=10G`));
  assert.equal((await readFile(join(pve1.guestRoot(99001), "upper/var/lib/leaf/configured"), "utf8")).trim(), "l0/edge base n1-push");
  const s = await hsctl(["status", "--json"], tree.env, 30_000);
  const top = (JSON.parse(s.stdout) as Status).children.map((c) => `${c.name}:${c.manifest}:${c.state}${c.leaf ? ":leaf" : ""}`).sort();
  assert.deepEqual(top, ["edge:n1-push:ready:leaf", "root-pve:n3-deep:ready"]);
  beside = true;
});

test("sync --configure runs each level's step against its leaves again (leaf-pve's edge, level 0's edge)", async () => {
  assert.ok(built && beside, "the tree tests ran");
  // Read from the host through the VM's overlay upper dir (never written from here: the overlay is mounted).
  const marker = join(sims[2]!.guestRoot(99031), "upper/var/lib/leaf/configured");
  const r = await hsctl(["sync", "--configure", "--json"], tree.env, 240_000);
  assert.equal(r.code, 0, `${r.stderr}\n${r.stdout.slice(-3000)}`);
  const edge = jsonLines(r.stdout).filter((e) => e.level === "l0/root-pve/leaf-pve/edge" && e.phase === "configure");
  assert.deepEqual(edge.filter((e) => e.kind !== "log" && e.kind !== "progress").map((e) => e.kind), ["started", "finished"], JSON.stringify(jsonLines(r.stdout).slice(-30)));
  assert.deepEqual((await readFile(marker, "utf8")).trim().split("\n"), ["leaf-pve/edge base n3-deep", "leaf-pve/edge base n3-deep"]);
  assert.deepEqual((await readFile(join(sims[0]!.guestRoot(99001), "upper/var/lib/leaf/configured"), "utf8")).trim().split("\n"), ["l0/edge base n1-push", "l0/edge base n1-push"]);
});

test("destroy -M n3-deep removes exactly that tree; n1-push's leaf and level 0 stay; every call fits PVE's schema", async () => {
  assert.ok(built && beside, "the tree tests ran");
  const d = await hsctl(["destroy", "-M", "n3-deep", "--json"], tree.env, 240_000);
  assert.equal(d.code, 0, `${d.stderr}\n${d.stdout.slice(-3000)}`);
  await Promise.all(sims.map((s) => s.settled()));
  // n1-push's edge and level 0's templates stay; root-pve (and with it everything below) is gone.
  assert.deepEqual([...sims[0]!.vms.keys()].sort(), [TEMPLATE, TEMPLATE + 1, 99001]);
  assert.equal(sims[0]!.vms.get(99001)!.status, "running");
  for (const sim of sims.slice(1)) assert.deepEqual([...sim.vms.values()].filter((v) => v.config.template !== "1").map((v) => v.vmid), [], sim.node);
  assert.equal(runNetns(tree.tag).length, 1, "only n1-push's edge still has a VM namespace");
  assert.deepEqual(tree.hsdPids.slice(1).filter(alive), []);
  assert.equal(tree.level0.exitCode, null, "level 0 is still running");
  const s = await hsctl(["status", "--json"], tree.env, 30_000);
  assert.deepEqual((JSON.parse(s.stdout) as Status).children.map((c) => `${c.name}:${c.manifest}`), ["edge:n1-push"]);
  assert.deepEqual((await hsdProcessesUnder(tree.root)).filter((p) => p !== tree.hsdPids[0]), []);
  assert.deepEqual(schemaViolations(sims.flatMap((x) => x.requests)), []);
});
