// Prebuilt demo packs (src/demo/demo-packs.ts): a level 0 places the very
// commits generateDemoRepo writes, as a complete repository git clones, and
// generates instead when the packs are stale or damaged.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFile, readdir, stat, writeFile, truncate } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { tempDir, git } from "../helpers/git-fixtures.js";
import { DEMO_REPO_NAMES, demoContentKey, generateDemoRepo } from "../../src/demo/demo-repos.js";
import { buildDemoPacks, placeDemoRepo } from "../../src/demo/demo-packs.js";

test("placed from prebuilt packs: the generated commits, complete, clean, with level 0's ignored files", async () => {
  const t = await tempDir();
  try {
    const packs = join(t.path, "packs");
    await buildDemoPacks(packs);
    for (const name of DEMO_REPO_NAMES) {
      const placed = join(t.path, "placed", name);
      const generated = join(t.path, "generated", name);
      assert.equal(await placeDemoRepo(placed, name, { packsDir: packs, vmRootPassword: "pw-placed" }), "prebuilt");
      await generateDemoRepo(generated, name, { vmRootPassword: "pw-generated" });
      assert.equal(await git(["rev-parse", "HEAD"], { cwd: placed }), await git(["rev-parse", "HEAD"], { cwd: generated }));
      assert.equal(await git(["symbolic-ref", "HEAD"], { cwd: placed }), "refs/heads/main");
      assert.equal(await git(["status", "--porcelain"], { cwd: placed }), "");
      // Every object of the whole history is there, not only the tip's tree: a child clones all of it.
      await git(["fsck", "--strict", "--no-dangling"], { cwd: placed });
      const clone = join(t.path, "clone", name);
      await git(["clone", "-q", placed, clone]);
      assert.equal(await git(["rev-list", "--count", "HEAD"], { cwd: clone }), await git(["rev-list", "--count", "HEAD"], { cwd: generated }));
    }
    const secret = join(t.path, "placed", "site-config", "secrets.yaml");
    assert.equal((await stat(secret)).mode & 0o777, 0o600);
    assert.match(await readFile(secret, "utf8"), /pw-placed/);
    assert.equal(await git(["check-ignore", "secrets.yaml"], { cwd: join(t.path, "placed", "site-config") }), "secrets.yaml");
  } finally {
    await t.cleanup();
  }
});

test("packs of another generator (key differs) or none at all: generated, same commit", async () => {
  const t = await tempDir();
  try {
    const packs = join(t.path, "packs");
    await buildDemoPacks(packs);
    const manifest = JSON.parse(await readFile(join(packs, "manifest.json"), "utf8")) as { key: string };
    await writeFile(join(packs, "manifest.json"), JSON.stringify({ ...manifest, key: "stale" }));
    const a = join(t.path, "a");
    assert.equal(await placeDemoRepo(a, "tofu", { packsDir: packs }), "generated");
    const b = join(t.path, "b");
    assert.equal(await placeDemoRepo(b, "tofu", { packsDir: join(t.path, "none") }), "generated");
    assert.equal(await git(["rev-parse", "HEAD"], { cwd: a }), manifestCommit(manifest, "tofu"));
    assert.equal(await git(["rev-parse", "HEAD"], { cwd: b }), manifestCommit(manifest, "tofu"));
  } finally {
    await t.cleanup();
  }
});

test("a damaged pack is not placed: the repo is generated instead", async () => {
  const t = await tempDir();
  try {
    const packs = join(t.path, "packs");
    await buildDemoPacks(packs);
    const dir = join(packs, "bootstrap");
    const pack = (await readdir(dir)).find((f) => f.endsWith(".pack"))!;
    await truncate(join(dir, pack), 200);
    const out = join(t.path, "bootstrap");
    assert.equal(await placeDemoRepo(out, "bootstrap", { packsDir: packs }), "generated");
    await git(["fsck", "--strict", "--no-dangling"], { cwd: out });
    assert.equal(await git(["status", "--porcelain"], { cwd: out }), "");
  } finally {
    await t.cleanup();
  }
});

test("the build's dist/demo/packs are the current generator's (npm run build wrote them)", async () => {
  const dist = fileURLToPath(new URL("../../dist/demo/packs/manifest.json", import.meta.url));
  const m = JSON.parse(await readFile(dist, "utf8")) as { key: string; repos: Record<string, unknown> };
  assert.equal(m.key, demoContentKey());
  assert.deepEqual(Object.keys(m.repos), [...DEMO_REPO_NAMES]);
});

function manifestCommit(m: unknown, name: string): string {
  return (m as { repos: Record<string, { commit: string }> }).repos[name]!.commit;
}
