// End to end on the local provider: a bad manifest (file or -M) builds nothing
// and lists every problem by file, node and field; `hsctl nest -M n3-deep`
// builds root-pve -> leaf-pve -> edge, each a level named by its manifest
// name, built by its parent's hsd; status shows each at its place.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, hsdProcessesUnder, jsonLines, levelRoots } from "../helpers/hsctl.js";

// A node named fail-me dies at its hsd's start, wherever a manifest puts it.
const { root, l0, env } = await e2eTree("hsd-manifest-", { HSD_FAULTS: "fail-me:startup:kill" });
type Status = { name: string; state: string; leaf?: boolean; manifest?: string; sync: string; children: Status[] };

async function tree(): Promise<string[]> {
  const s = await hsctl(["status", "--json"], env, 60_000);
  assert.equal(s.code, 0, s.stderr);
  const paths: string[] = [];
  const walk = (n: Status, p: string) => { for (const c of n.children) { paths.push(`${p}/${c.name}`); walk(c, `${p}/${c.name}`); } };
  walk(JSON.parse(s.stdout) as Status, "l0");
  return paths.sort();
}
async function manifestFile(name: string, nodes: string[], extra = ""): Promise<string> {
  const file = join(root, `${name}.yaml`);
  await writeFile(file, `schema_version: 2\nname: ${name}\n${extra}nodes:\n${nodes.map((n) => `  - { ${n} }\n`).join("")}`);
  return file;
}
const pve = (name: string, parent?: string) => `name: ${name}, type: pve, spec: pve, preset: vm-small, image: pve-9${parent ? `, parent: ${parent}` : ""}`;
const N3 = ["l0/root-pve", "l0/root-pve/leaf-pve", "l0/root-pve/leaf-pve/edge"];

test("an invalid manifest is ManifestInvalid naming every problem, and nothing is built", async () => {
  const file = join(root, "bad.yaml");
  await writeFile(file, [
    "schema_version: 2", "name: bad", "nodes:",
    "  - { name: a, type: pve, spec: pve, preset: vm-huge, image: pve-9, parent: b }",
    "  - { name: b, type: pve, spec: pve, preset: vm-large, image: pve-9, parent: a }",
    "  - { name: c, type: vm, spec: base, preset: vm-small, image: debian-12 }",
    "  - { name: d, type: vm, spec: base, preset: vm-small, image: debian-12, parent: c }", "",
  ].join("\n"));
  const r = await hsctl(["nest", "--manifest", file], env, 60_000);
  assert.equal(r.code, 1, r.stderr);
  assert.ok(r.stderr.split("\n").some((l) => l.startsWith("hsctl: ") && l.endsWith("[ManifestInvalid]")), r.stderr);
  const lines = r.stderr.split("\n").filter((l) => l.startsWith("  node "));
  assert.deepEqual(lines.map((l) => l.slice(0, l.indexOf(":"))), ["  node a, preset", "  node d, parent", "  node a, parent", "  node b, parent"]);
  const m = await hsctl(["nest", "-M", "n9-none"], env, 60_000);
  assert.equal(m.code, 1, m.stderr);
  assert.ok(m.stderr.split("\n").some((l) => l.startsWith("hsctl: ") && l.endsWith("[ManifestInvalid]")), m.stderr);
  assert.deepEqual(await levelRoots(l0), [l0]);
  const s = await hsctl(["status", "--json"], env, 60_000);
  assert.deepEqual((JSON.parse(s.stdout) as Status).children, []);
});

test("nest -M n3-deep builds the manifest's tree, each level by its manifest name", async () => {
  const r = await hsctl(["nest", "-M", "n3-deep", "--json"], env, 240_000);
  assert.equal(r.code, 0, `${r.stderr}\n${r.stdout.slice(-3000)}`);
  const ev = jsonLines(r.stdout);
  const ready = ev.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level);
  assert.deepEqual(ready.sort(), ["l0/root-pve", "l0/root-pve/leaf-pve"]);
  // edge is a vm leaf: created, booted and configured by leaf-pve, with no hsd of its own.
  const edge = "l0/root-pve/leaf-pve/edge";
  assert.deepEqual([...new Set(ev.filter((e) => e.level === edge && e.kind === "finished").map((e) => e.phase))], ["preflight", "provision", "boot", "configure"]);
  assert.ok(ev.some((e) => e.level === edge && e.phase === "configure" && /pve-config\| leaf: configured from 127\.0\.0\.1:\d+ against 127\.0\.0\.1/.test(e.message ?? "")), "leaf-pve ran its steps against edge");
  const edgeDir = join(l0, "state", "levels", "root-pve", "state", "levels", "leaf-pve", "state", "levels", "edge");
  assert.deepEqual(await readdir(edgeDir), []);
  assert.deepEqual(await hsdProcessesUnder(edgeDir), []);
  // Each node's spec reaches its configure steps through the environment.
  const specs = jsonLines(r.stdout).filter((e) => e.phase === "configure" && /pve-config\| spec: /.test(e.message ?? ""))
    .map((e) => `${e.level} ${/spec: (\S+ \(manifest \S+\))/.exec(e.message)![1]}`).sort();
  assert.deepEqual(specs, [
    "l0/root-pve pve (manifest n3-deep)", "l0/root-pve/leaf-pve pve (manifest n3-deep)", "l0/root-pve/leaf-pve/edge base (manifest n3-deep)",
  ]);
  const s = await hsctl(["status", "--json"], env, 60_000);
  const st = JSON.parse(s.stdout) as Status;
  const paths: string[] = [];
  const walk = (n: Status, p: string) => { for (const c of n.children) { paths.push(`${p}/${c.name}`); assert.equal(c.state, "ready", c.name); walk(c, `${p}/${c.name}`); } };
  walk(st, "l0");
  assert.deepEqual(paths, ["l0/root-pve", "l0/root-pve/leaf-pve", "l0/root-pve/leaf-pve/edge"]);
  const edgeSt = st.children[0]!.children[0]!.children[0]!;
  assert.deepEqual([edgeSt.leaf, edgeSt.manifest, st.children[0]!.leaf, st.children[0]!.manifest], [true, "n3-deep", undefined, "n3-deep"]);
  const text = await hsctl(["status"], env, 60_000);
  assert.match(text.stdout, /└─ edge {2}ready {2}\[vm leaf, no hsd\]/);
  assert.deepEqual(await readdir(join(l0, "state", "levels")), ["root-pve"]);
  // sync --configure reaches the leaf through its parent: leaf-pve configures edge again.
  const sync = await hsctl(["sync", "--configure", "--json"], env, 120_000);
  assert.equal(sync.code, 0, sync.stderr);
  const configured = jsonLines(sync.stdout).filter((e) => e.phase === "configure" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(configured, N3);
  // A second run resumes: every phase of every node is skipped or re-confirmed, nothing is rebuilt.
  const again = await hsctl(["nest", "-M", "n3-deep", "--json"], env, 120_000);
  assert.equal(again.code, 0, again.stderr);
  const provisioned = jsonLines(again.stdout).filter((e) => e.phase === "provision" && e.kind === "finished");
  assert.deepEqual(provisioned, []);
});

test("manifests share level 0: destroy -M removes exactly its tree; a name another manifest built is refused", async () => {
  const r = await hsctl(["nest", "-M", "n1-push", "--json"], env, 120_000);
  assert.equal(r.code, 0, r.stderr);
  // n1's only node is a vm leaf of level 0 itself: level 0 configures it.
  assert.ok(jsonLines(r.stdout).some((e) => e.level === "l0/edge" && e.phase === "configure" && /\| leaf: configured from/.test(e.message ?? "")));
  assert.deepEqual(await tree(), [...N3, "l0/edge"].sort());
  const clash = await hsctl(["nest", "-M", "n2-push"], env, 60_000);
  assert.equal(clash.code, 1, clash.stderr);
  assert.ok(clash.stderr.split("\n").some((l) => l.endsWith("[ManifestInvalid]")), clash.stderr);
  assert.deepEqual(await tree(), [...N3, "l0/edge"].sort());
  const d = await hsctl(["destroy", "-M", "n1-push", "--json"], env, 120_000);
  assert.equal(d.code, 0, d.stderr);
  assert.deepEqual(await tree(), N3);
  assert.deepEqual((await readdir(join(l0, "state", "levels"))).sort(), ["root-pve"]);
  const d3 = await hsctl(["destroy", "-M", "n3-deep", "--json"], env, 120_000);
  assert.equal(d3.code, 0, d3.stderr);
  assert.deepEqual(await tree(), []);
  assert.deepEqual(await levelRoots(l0), [l0]);
  // With n3-deep gone, n2-push's root-pve is free: a pve level with a vm leaf below it.
  const n2 = await hsctl(["nest", "-M", "n2-push", "--json"], env, 120_000);
  assert.equal(n2.code, 0, n2.stderr);
  assert.deepEqual(await tree(), ["l0/root-pve", "l0/root-pve/edge"]);
  assert.equal((await hsctl(["destroy", "-M", "n2-push"], env, 120_000)).code, 0);
  assert.deepEqual(await levelRoots(l0), [l0]);
});

test("reconcile: an added node alone is built; a removed one stays without --prune and goes with it", async () => {
  const file = await manifestFile("rc", [pve("ra"), pve("rb", "ra")]);
  assert.equal((await hsctl(["nest", "--manifest", file], env, 120_000)).code, 0);
  assert.deepEqual(await tree(), ["l0/ra", "l0/ra/rb"]);
  await manifestFile("rc", [pve("ra"), pve("rb", "ra"), pve("rc2", "ra")]);
  const add = await hsctl(["nest", "--manifest", file, "--json"], env, 120_000);
  assert.equal(add.code, 0, add.stderr);
  assert.deepEqual(jsonLines(add.stdout).filter((e) => e.phase === "provision" && e.kind === "finished").map((e) => e.level), ["l0/ra/rc2"]);
  assert.deepEqual(await tree(), ["l0/ra", "l0/ra/rb", "l0/ra/rc2"]);
  await manifestFile("rc", [pve("ra"), pve("rc2", "ra")]);
  assert.equal((await hsctl(["nest", "--manifest", file], env, 120_000)).code, 0);
  assert.deepEqual(await tree(), ["l0/ra", "l0/ra/rb", "l0/ra/rc2"]);
  const pruned = await hsctl(["nest", "--manifest", file, "--prune", "--json"], env, 120_000);
  assert.equal(pruned.code, 0, pruned.stderr);
  assert.deepEqual(await tree(), ["l0/ra", "l0/ra/rc2"]);
  assert.deepEqual(await readdir(join(l0, "state", "levels", "ra", "state", "levels")), ["rc2"]);
  assert.equal((await hsctl(["destroy", "-M", "rc"], env, 120_000)).code, 0);
  assert.deepEqual(await tree(), []);
});

test("on_error continue: siblings of a failing node are built; the run exits 1 naming it", async () => {
  const file = await manifestFile("oc", [pve("ok1"), pve("fail-me"), pve("ok2")], "settings: { on_error: continue }\n");
  const r = await hsctl(["nest", "--manifest", file, "--json"], env, 120_000);
  assert.equal(r.code, 1, r.stderr);
  const ev = jsonLines(r.stdout);
  assert.deepEqual(ev.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort(), ["l0/ok1", "l0/ok2"]);
  assert.deepEqual([...new Set(ev.filter((e) => e.kind === "failed").map((e) => e.level))], ["l0/fail-me"]);
  assert.deepEqual(await tree(), ["l0/fail-me", "l0/ok1", "l0/ok2"]);
  assert.equal((await hsctl(["destroy", "-M", "oc"], env, 120_000)).code, 0);
  assert.deepEqual(await tree(), []);
});

test("on_error rollback: what the run created is destroyed, deepest first, and the run exits 1", async () => {
  const file = await manifestFile("orb", [pve("rb1"), pve("rb2", "rb1"), pve("fail-me", "rb2")], "settings: { on_error: rollback }\n");
  const r = await hsctl(["nest", "--manifest", file, "--json"], env, 120_000);
  assert.equal(r.code, 1, r.stderr);
  const torn = jsonLines(r.stdout).filter((e) => e.phase === "teardown" && e.kind === "finished").map((e) => e.level);
  assert.deepEqual(torn, ["l0/rb1/rb2/fail-me", "l0/rb1/rb2", "l0/rb1"]);
  assert.deepEqual(await tree(), []);
  assert.deepEqual(await levelRoots(l0), [l0]);
});
