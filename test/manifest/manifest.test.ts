// Manifest validation against the demo site-config's own schema, presets and
// specs: every demo manifest is accepted and sized from presets; each kind of
// bad manifest is one ManifestInvalid error naming file, node and field.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { homestakShapedFiles } from "../../src/demo/demo-homestak-files.js";
import { HOMESTAK_IMAGES, ManifestSource, manifestImages } from "../../src/manifest/manifest-source.js";
import { manifestPlan } from "../../src/manifest/manifest.js";
import { parseConfig } from "../../src/config/load-config.js";
import { inheritedConfig } from "../../src/config/write-config.js";
import { heightOf, imagesOf, rootsOf, subtreeOf, unheldImages, type BuildPlan } from "../../src/domain/plan.js";
import { HsError } from "../../src/domain/errors.js";

let dir: string;
let src: ManifestSource;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hsd-manifest-"));
  for (const [name, f] of Object.entries(homestakShapedFiles("site-config"))) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(join(dir, name), f.text);
  }
  src = new ManifestSource({ siteConfigDir: dir, images: () => HOMESTAK_IMAGES });
});
after(() => rm(dir, { recursive: true, force: true }));

type Problem = { file: string; node: string; field: string };
async function problems(text: string, file = "bad.yaml"): Promise<Problem[]> {
  const err = await src.load({ text, file }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof HsError, `expected a ManifestInvalid error, got ${String(err)}`);
  assert.equal(err.code, "ManifestInvalid");
  return (err.details.errors as Problem[]).map(({ file, node, field }) => ({ file, node, field }));
}
const head = "schema_version: 2\nname: t\nnodes:\n";
const node = (o: string) => `  - { ${o} }\n`;
const pve = (name: string, extra = "") => node(`name: ${name}, type: pve, spec: pve, preset: vm-large, image: pve-9${extra}`);
const vm = (name: string, extra = "") => node(`name: ${name}, type: vm, spec: base, preset: vm-small, image: debian-12${extra}`);

test("every demo manifest is valid; presets size the nodes and disk overrides", async () => {
  for (const name of ["n1-push", "n1-pull", "n2-push", "n2-pull", "n3-deep"]) {
    const m = await src.load({ name });
    assert.equal(m.name, name);
    assert.equal(m.onError, "stop");
  }
  const m = await src.load({ name: "n3-deep" });
  assert.deepEqual(m.nodes.map((n) => [n.name, n.type, n.parent ?? null, n.vmid, n.cores, n.memoryMb, n.diskGb]), [
    ["root-pve", "pve", null, 99011, 4, 8192, 64],
    ["leaf-pve", "pve", "root-pve", 99021, 2, 4096, 20],
    ["edge", "vm", "leaf-pve", 99031, 2, 2048, 10],
  ]);
  assert.deepEqual(rootsOf(m.nodes).map((n) => n.name), ["root-pve"]);
  assert.deepEqual(subtreeOf(m.nodes, "root-pve").map((n) => n.name), ["leaf-pve", "edge"]);
  assert.equal(heightOf(m.nodes), 3);
  assert.equal(heightOf(subtreeOf(m.nodes, "root-pve")), 2);
});

test("-M names a file in site-config's manifests/; an unknown one names it", async () => {
  const err = await src.load({ name: "n9-nope" }).catch((e: HsError) => e);
  assert.equal((err as HsError).code, "ManifestInvalid");
  assert.equal((err as HsError).details.file, join(dir, "manifests", "n9-nope.yaml"));
  assert.equal(((await src.load({ name: "../etc/passwd" }).catch((e: HsError) => e)) as HsError).code, "ManifestInvalid");
});

test("schema violations name node and field, all at once", async () => {
  assert.deepEqual(await problems(head + node("name: a, type: vm, spec: base, preset: vm-small, image: debian-12, vmid: 5, colour: red")), [
    { file: "bad.yaml", node: "a", field: "colour" },
    { file: "bad.yaml", node: "a", field: "vmid" },
  ]);
  assert.deepEqual(await problems("schema_version: 3\nname: t\nnodes: []\n"), [
    { file: "bad.yaml", node: "", field: "schema_version" },
    { file: "bad.yaml", node: "", field: "nodes" },
  ]);
  assert.deepEqual(await problems(head + pve("a") + "settings: { on_error: retry }\n"), [{ file: "bad.yaml", node: "", field: "settings.on_error" }]);
  assert.deepEqual(await problems("nodes: [\n"), [{ file: "bad.yaml", node: "", field: "" }]);
});

test("unknown parent, cycle, duplicate name, children under a vm, duplicate vmid", async () => {
  assert.deepEqual(await problems(head + vm("a", ", parent: ghost")), [{ file: "bad.yaml", node: "a", field: "parent" }]);
  assert.deepEqual(await problems(head + pve("a", ", parent: b") + pve("b", ", parent: a") + pve("c")), [
    { file: "bad.yaml", node: "a", field: "parent" }, { file: "bad.yaml", node: "b", field: "parent" },
  ]);
  assert.deepEqual(await problems(head + pve("a", ", parent: a")), [{ file: "bad.yaml", node: "a", field: "parent" }]);
  assert.deepEqual(await problems(head + pve("a") + vm("a")), [{ file: "bad.yaml", node: "a", field: "name" }]);
  assert.deepEqual(await problems(head + vm("a") + vm("b", ", parent: a")), [{ file: "bad.yaml", node: "b", field: "parent" }]);
  assert.deepEqual(await problems(head + pve("a", ", vmid: 100") + vm("b", ", vmid: 100, parent: a")), [{ file: "bad.yaml", node: "b", field: "vmid" }]);
});

test("unknown preset, spec or image; bad names; ct; every problem in one error", async () => {
  assert.deepEqual(await problems(head + node("name: a, type: vm, spec: nope, preset: vm-huge, image: win-11")), [
    { file: "bad.yaml", node: "a", field: "preset" }, { file: "bad.yaml", node: "a", field: "spec" }, { file: "bad.yaml", node: "a", field: "image" },
  ]);
  for (const bad of ["Edge", "-a", "a_b", "a".repeat(64), "a.b"]) {
    assert.deepEqual(await problems(head + vm(JSON.stringify(bad))), [{ file: "bad.yaml", node: bad, field: "name" }], bad);
  }
  assert.deepEqual(await problems(head + node("name: c, type: ct, spec: base, preset: vm-small, image: debian-12")), [{ file: "bad.yaml", node: "c", field: "type" }]);
  assert.deepEqual(await problems(head + node("name: a, type: vm")), [
    { file: "bad.yaml", node: "a", field: "spec" }, { file: "bad.yaml", node: "a", field: "preset" }, { file: "bad.yaml", node: "a", field: "image" },
  ]);
  const images = new ManifestSource({ siteConfigDir: dir, images: () => ["debian-12"] });
  const err = await images.load({ name: "n3-deep" }).catch((e: HsError) => e) as HsError;
  assert.deepEqual((err.details.errors as Problem[]).map((p) => [p.node, p.field]), [["root-pve", "image"], ["leaf-pve", "image"]]);
});

test("images are level 0's images: (homestak's names only when it has none); each child is passed exactly its subtree's", async () => {
  const withImages = parseConfig("images:\n  pve-9: /x/pve-9.img\n  debian-12: { path: /x/d.img, sha256: " + "a".repeat(64) + " }\n  debian-13: /x/d13.img\n", "t.yaml", { root: dir });
  assert.deepEqual([...manifestImages(withImages)].sort(), ["debian-12", "debian-13", "pve-9"]);
  assert.deepEqual(manifestImages(parseConfig("", "t.yaml", { root: dir })), HOMESTAK_IMAGES);
  const only = parseConfig("images:\n  debian-12: /x/d.img\n", "t.yaml", { root: dir });
  const err = await new ManifestSource({ siteConfigDir: dir, images: () => manifestImages(only) }).load({ name: "n3-deep" }).catch((e: HsError) => e) as HsError;
  assert.equal(err.code, "ManifestInvalid");
  assert.deepEqual((err.details.errors as Problem[]).map((p) => [p.node, p.field]), [["root-pve", "image"], ["leaf-pve", "image"]]);
  // n3-deep: root-pve's subtree is leaf-pve (pve-9) and edge (debian-12); leaf-pve's is edge alone.
  const plan = manifestPlan(await src.load({ name: "n3-deep" }));
  const passed = (child: string) => inheritedConfig(withImages, imagesOf(subtreeOf(plan.nodes, child))).images;
  assert.deepEqual(passed("root-pve"), { "pve-9": {}, "debian-12": { sha256: "a".repeat(64) } });
  assert.deepEqual(passed("leaf-pve"), { "debian-12": { sha256: "a".repeat(64) } });
  assert.deepEqual(passed("edge"), {});
  // A uniform tree still passes every image down.
  assert.deepEqual(Object.keys(inheritedConfig(withImages).images as object).sort(), ["debian-12", "debian-13", "pve-9"]);
  // A level checks the nodes it builds against what it holds (a level holding none checks nothing).
  assert.deepEqual(unheldImages(subtreePlan(plan, "leaf-pve"), ["pve-9"]).map((p) => [p.node, p.field]), [["edge", "image"]]);
  assert.deepEqual(unheldImages(subtreePlan(plan, "leaf-pve"), ["debian-12"]), []);
  assert.deepEqual(unheldImages(subtreePlan(plan, "leaf-pve"), []), []);
});

const subtreePlan = (plan: BuildPlan, root: string): BuildPlan => ({ ...plan, nodes: subtreeOf(plan.nodes, root) });

test("settings.on_error is read", async () => {
  for (const v of ["stop", "continue", "rollback"]) {
    assert.equal((await src.load({ text: `${head}${pve("a")}settings: { on_error: ${v} }\n`, file: "x.yaml" })).onError, v);
  }
});
