// src/git/index-refresh.ts on real git: after a checkout the size of a real
// repo, the files written in the index's second are "racily clean" (git here
// compares whole seconds) and the next status re-hashes them. The refresher's
// one update-index after that second leaves no such entry, so a later status
// has nothing to re-hash or rewrite. A refresh cancelled before it starts
// runs no git at all.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkoutWorktree } from "../../src/git/worktree-checkout.js";
import { IndexRefresher } from "../../src/git/index-refresh.js";
import { silentLogger } from "../../src/log/logger.js";
import { generateLargeRepo } from "../helpers/large-repo.js";
import { git, run } from "../helpers/git-fixtures.js";

const root = await mkdtemp(join(tmpdir(), "hsd-index-refresh-"));
after(() => rm(root, { recursive: true, force: true }));

const src = join(root, "src");
await generateLargeRepo(src, { bytes: 6 << 20, fileBytes: 32 << 10, commits: 2 });
const exp = join(root, "exp.git");
await git(["clone", "-q", "--bare", src, exp]);
const head = await git(["--git-dir", exp, "rev-parse", "HEAD"]);

async function freshCheckout(name: string): Promise<string> {
  const worktree = join(root, name);
  const r = await checkoutWorktree({ worktree, exportGitDir: exp, commit: head, log: silentLogger() });
  assert.equal(r.held, false);
  return worktree;
}

/** Tracked files whose mtime falls in or after the index's second: what git's racy check re-hashes. */
async function racyFiles(worktree: string): Promise<number> {
  const indexSec = Math.floor((await stat(join(worktree, ".git", "index"))).mtimeMs / 1000);
  let n = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.name === ".git") continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (Math.floor((await stat(p)).mtimeMs / 1000) >= indexSec) n++;
    }
  };
  await walk(worktree);
  return n;
}

test("a refresh after the checkout's second leaves no racily clean entry, and status then leaves the index alone", async () => {
  const worktree = await freshCheckout("refreshed");
  const refresher = new IndexRefresher(silentLogger(), { minBytes: 1 });
  await refresher.schedule(worktree, 6 << 20);
  assert.equal(await racyFiles(worktree), 0);
  const before = (await stat(join(worktree, ".git", "index"))).mtimeMs;
  // Without GIT_OPTIONAL_LOCKS=0 status writes the index back whenever it had to re-check an entry.
  assert.equal(await git(["status", "--porcelain"], { cwd: worktree }), "");
  assert.equal((await stat(join(worktree, ".git", "index"))).mtimeMs, before);
});

test("a local edit made before the refresh still shows as dirty after it", async () => {
  const worktree = await freshCheckout("edited");
  const file = (await git(["ls-files"], { cwd: worktree })).split("\n")[0]!;
  const { writeFile } = await import("node:fs/promises");
  await writeFile(join(worktree, file), "edited by the operator\n");
  const refresher = new IndexRefresher(silentLogger(), { minBytes: 1 });
  await refresher.schedule(worktree, 6 << 20);
  // git() trims: " M path" reads "M path"
  assert.equal(await git(["status", "--porcelain"], { cwd: worktree }), `M ${file}`);
});

test("settle before the refresh starts cancels it: no git runs, the index is as the checkout wrote it", async () => {
  const worktree = await freshCheckout("cancelled");
  const index = join(worktree, ".git", "index");
  const before = await stat(index);
  const refresher = new IndexRefresher(silentLogger(), { minBytes: 1 });
  const done = refresher.schedule(worktree, 6 << 20);
  await refresher.settle(worktree);
  await done;
  const now = await stat(index);
  assert.equal(now.mtimeMs, before.mtimeMs);
  assert.equal(now.ino, before.ino);
});

test("a small checkout is not worth a refresh: nothing is scheduled below minBytes", async () => {
  const worktree = await freshCheckout("small");
  const before = await stat(join(worktree, ".git", "index"));
  const refresher = new IndexRefresher(silentLogger(), { minBytes: 1 << 30 });
  await refresher.schedule(worktree, 6 << 20);
  assert.equal((await stat(join(worktree, ".git", "index"))).ino, before.ino);
});

test("in a tree handed to another user (hsd runs as root), the refreshed index stays that user's", async () => {
  assert.equal(process.getuid?.(), 0, "handing a tree to another user needs root, as hsd with homestak.user does; CI runs this as root");
  const worktree = await freshCheckout("owned");
  const uid = 65534; // nobody: any user other than root
  await run("chown", ["-R", `${uid}:${uid}`, worktree]);
  const refresher = new IndexRefresher(silentLogger(), { minBytes: 1 });
  await refresher.schedule(worktree, 6 << 20);
  const st = await stat(join(worktree, ".git", "index"));
  assert.equal(st.uid, uid);
  assert.equal(st.gid, uid);
  assert.equal(await racyFiles(worktree), 0);
});

test("a checkout arriving once the index's second is over runs the refresh at once rather than cancel it", async () => {
  const worktree = await freshCheckout("run-now");
  const index = join(worktree, ".git", "index");
  // Stamp the index in the second of the checkout's files, so some are racy whatever the clock did.
  const { utimes } = await import("node:fs/promises");
  const sec = Math.floor((await stat(join(worktree, (await git(["ls-files"], { cwd: worktree })).split("\n")[0]!))).mtimeMs / 1000);
  await utimes(index, sec, sec + 0.9);
  assert.ok(await racyFiles(worktree) > 0);
  let skew = 0;
  const refresher = new IndexRefresher(silentLogger(), { minBytes: 1, now: () => Date.now() + skew });
  const done = refresher.schedule(worktree, 6 << 20);
  skew = 5000; // the timer has not fired, but its time has come
  await refresher.settle(worktree);
  assert.equal(await racyFiles(worktree), 0, "the refresh ran before settle returned");
  await done;
  assert.equal(await git(["status", "--porcelain"], { cwd: worktree }), "");
});

test("after a checkout with many racy files the refresh is done before afterCheckout returns; with few, it is left to the background", async () => {
  const many = await freshCheckout("inline");
  const { utimes } = await import("node:fs/promises");
  const stampRacy = async (wt: string) => {
    const sec = Math.floor((await stat(join(wt, (await git(["ls-files"], { cwd: wt })).split("\n")[0]!))).mtimeMs / 1000);
    await utimes(join(wt, ".git", "index"), sec, sec + 0.9);
    assert.ok(await racyFiles(wt) > 0);
  };
  await stampRacy(many);
  await new IndexRefresher(silentLogger(), { minBytes: 1, inlineMinRacyBytes: 1 }).afterCheckout(many, 6 << 20);
  assert.equal(await racyFiles(many), 0);

  const few = await freshCheckout("background");
  await stampRacy(few);
  const refresher = new IndexRefresher(silentLogger(), { minBytes: 1, inlineMinRacyBytes: 1 << 30 });
  await refresher.afterCheckout(few, 6 << 20);
  assert.ok(await racyFiles(few) > 0, "not refreshed yet");
  await refresher.settleAll(); // the refresh's start is not due yet: settle cancels it, as a shutdown does
});
