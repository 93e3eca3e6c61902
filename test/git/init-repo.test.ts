// initRepo writes HEAD last, after every other file it was given (a
// repository with HEAD is taken as complete): a worktree whose alternates
// could not be written has no HEAD, so the next sync makes it again; a new
// export's remote comes with its config; both kinds are fsck clean.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { tempDir, git } from "../helpers/git-fixtures.js";
import { initRepo } from "../../src/git/init-repo.js";
import { ensureBareRepo } from "../../src/git/export-repos.js";
import { prepareWorktree } from "../../src/git/worktree-checkout.js";

test("a worktree whose alternates cannot be written gets no HEAD, and the next prepare makes it whole", async () => {
  const dir = await tempDir();
  try {
    const exp = join(dir.path, "repos", "tofu.git");
    await ensureBareRepo(exp);
    const wt = join(dir.path, "work", "tofu");
    // A directory where the alternates file goes: its write fails (EISDIR).
    await mkdir(join(wt, ".git", "objects", "info", "alternates"), { recursive: true });
    await assert.rejects(prepareWorktree(wt, exp), (err: NodeJS.ErrnoException) => err.code === "EISDIR");
    assert.equal(existsSync(join(wt, ".git", "HEAD")), false, "HEAD written although the repo is incomplete");

    await rm(join(wt, ".git", "objects", "info", "alternates"), { recursive: true });
    await prepareWorktree(wt, exp);
    assert.equal(await readFile(join(wt, ".git", "objects", "info", "alternates"), "utf8"), `${join(exp, "objects")}\n`);
    assert.equal(await git(["rev-parse", "--is-inside-work-tree"], { cwd: wt }), "true");
    await git(["fsck", "--strict", "--no-progress"], { cwd: wt });
  } finally {
    await dir.cleanup();
  }
});

test("a new export is written with its remote in its config, and is fsck clean", async () => {
  const dir = await tempDir();
  try {
    const exp = join(dir.path, "site-config.git");
    const remote = "[remote \"origin\"]\n\turl = http::ssh://127.0.0.1:2222/site-config\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n";
    assert.equal(await ensureBareRepo(exp, undefined, remote), true);
    assert.equal(await ensureBareRepo(exp, undefined, remote), false, "an existing export is not made again");
    assert.equal(await git(["--git-dir", exp, "config", "--get", "remote.origin.url"]), "http::ssh://127.0.0.1:2222/site-config");
    assert.equal(await git(["--git-dir", exp, "config", "--get", "core.bare"]), "true");
    assert.equal(await git(["--git-dir", exp, "symbolic-ref", "HEAD"]), "refs/heads/main");
    await git(["--git-dir", exp, "fsck", "--strict", "--no-progress"]);
    // Every directory git and the fetch write into is there from the start.
    for (const d of ["objects/info", "objects/pack", "refs/heads", "refs/tags"]) assert.ok(existsSync(join(exp, d)), d);
  } finally {
    await dir.cleanup();
  }
});

test("initRepo: files beside the config, HEAD on the branch asked for", async () => {
  const dir = await tempDir();
  try {
    const repo = join(dir.path, "r.git");
    await initRepo(repo, { bare: true, head: "refs/heads/_working", files: { "description": "hsd export\n" } });
    assert.equal(await readFile(join(repo, "description"), "utf8"), "hsd export\n");
    assert.equal(await git(["--git-dir", repo, "symbolic-ref", "HEAD"]), "refs/heads/_working");
    await git(["--git-dir", repo, "fsck", "--strict", "--no-progress"]);
  } finally {
    await dir.cleanup();
  }
});
