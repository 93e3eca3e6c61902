// End to end on the local provider: a bad manifest (file or -M) builds nothing
// and lists every problem by file, node and field; `hsctl nest -M n3-deep`
// builds root-pve -> leaf-pve -> edge, each a level named by its manifest
// name, built by its parent's hsd; status shows each at its place.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";

const { root, l0, env } = await e2eTree("hsd-manifest-");
type Status = { name: string; state: string; children: Status[] };

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
  const ready = jsonLines(r.stdout).filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level);
  assert.deepEqual(ready.sort(), ["l0/root-pve", "l0/root-pve/leaf-pve", "l0/root-pve/leaf-pve/edge"]);
  const s = await hsctl(["status", "--json"], env, 60_000);
  const st = JSON.parse(s.stdout) as Status;
  const paths: string[] = [];
  const walk = (n: Status, p: string) => { for (const c of n.children) { paths.push(`${p}/${c.name}`); assert.equal(c.state, "ready", c.name); walk(c, `${p}/${c.name}`); } };
  walk(st, "l0");
  assert.deepEqual(paths, ["l0/root-pve", "l0/root-pve/leaf-pve", "l0/root-pve/leaf-pve/edge"]);
  assert.deepEqual(await readdir(join(l0, "state", "levels")), ["root-pve"]);
  // A second run resumes: every phase of every node is skipped or re-confirmed, nothing is rebuilt.
  const again = await hsctl(["nest", "-M", "n3-deep", "--json"], env, 120_000);
  assert.equal(again.code, 0, again.stderr);
  const provisioned = jsonLines(again.stdout).filter((e) => e.phase === "provision" && e.kind === "finished");
  assert.deepEqual(provisioned, []);
});
