// generateDemoRepos: deterministic history from a seed, homestak-like shape, ignored 0600 secret.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { stat } from "node:fs/promises";
import { tempDir, git } from "../helpers/git-fixtures.js";
import { generateDemoRepos, addCommit, DEMO_REPO_NAMES } from "../../src/demo/demo-repos.js";

test("same seed, same commits; different seed, different commits", async () => {
  const t = await tempDir();
  try {
    const a = await generateDemoRepos(join(t.path, "a"), { seed: 1 });
    const b = await generateDemoRepos(join(t.path, "b"), { seed: 1 });
    const c = await generateDemoRepos(join(t.path, "c"), { seed: 2 });
    assert.deepEqual(Object.keys(a), [...DEMO_REPO_NAMES]);
    for (const n of DEMO_REPO_NAMES) {
      const ha = await git(["rev-parse", "HEAD"], { cwd: a[n] });
      assert.equal(await git(["rev-parse", "HEAD"], { cwd: b[n] }), ha);
      assert.notEqual(await git(["rev-parse", "HEAD"], { cwd: c[n] }), ha);
      assert.equal(await git(["status", "--porcelain"], { cwd: a[n] }), "");
    }
    const commits = Number(await git(["rev-list", "--count", "HEAD"], { cwd: a["iac-driver"] }));
    assert.ok(commits >= 250 && commits <= 350, String(commits));
    const secret = join(a["site-config"]!, "secrets.yaml");
    assert.equal((await stat(secret)).mode & 0o777, 0o600);
    assert.equal(await git(["check-ignore", "secrets.yaml"], { cwd: a["site-config"] }), "secrets.yaml");
    const oid = await addCommit(a.tofu!, { "envs/x.tf": "# x\n" });
    assert.equal(await git(["rev-parse", "HEAD"], { cwd: a.tofu }), oid);
    assert.equal(await git(["status", "--porcelain"], { cwd: a.tofu }), "");
  } finally {
    await t.cleanup();
  }
});
