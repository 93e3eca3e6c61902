// A new level's first sync, by what runs where: each repo's export and
// working-tree repo are made while the SSH handshake runs, and each fresh
// working tree is checked out by the process that indexed its pack, so the
// syncing process forks once per repo (index-pack under sh), not twice; the
// export's refs mirror the parent's (loose-refs.ts, or isomorphic-git over packed-refs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { startLevel0, git, gitCallLog, syncOptions } from "../helpers/git-fixtures.js";
import { syncFromParent } from "../../src/git/sync-from-parent.js";
import { refreshExports } from "../../src/git/export-repos.js";
import { addCommit } from "../../src/demo/demo-repos.js";
import { silentLogger } from "../../src/log/logger.js";
import { levelPaths } from "../../src/config/level-layout.js";
import { HsError } from "../../src/domain/errors.js";

interface GitCall { pid: number; ppid: number; parent: string; command: string }

/**
 * Runs fn with a `git` on PATH that logs, per call, its pid, its parent's pid
 * and name (/proc/$PPID/comm: node for a fork of this process, sh for the
 * index-pack wrapper) and its command, then execs the real git (same pid).
 */
async function gitCallsOf(dir: string, fn: () => Promise<void>): Promise<GitCall[]> {
  return (await gitCallLog(dir, "$$ $PPID $(cat /proc/$PPID/comm) ", fn)).map((l) => {
    const [pid, ppid, parent, ...args] = l.split(" ");
    return { pid: Number(pid), ppid: Number(ppid), parent: parent!, command: args.find((a) => !a.startsWith("-") && !a.includes("=")) ?? "" };
  });
}

test("a new level's first sync forks itself once per repo: the pack's index-pack process checks the working tree out", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    const calls = await gitCallsOf(l0.dir, async () => { await syncFromParent(syncOptions(l0, root)); });
    const by = (command: string) => calls.filter((c) => c.command === command);
    // Every demo repo's pack is over the divert threshold: index-pack runs under an sh forked from this process, and
    // read-tree runs in that very sh (exec), once the fetch is done: one fork of the level per repo.
    const indexPacks = by("index-pack");
    assert.equal(indexPacks.length, l0.names.length);
    for (const c of indexPacks) assert.equal(c.parent, "sh", JSON.stringify(c));
    const wrappers = new Set(indexPacks.map((c) => c.ppid));
    assert.equal(by("read-tree").length, l0.names.length);
    for (const c of by("read-tree")) assert.ok(wrappers.has(c.pid), `read-tree ran outside an index-pack wrapper: ${JSON.stringify(c)}`);
    // Besides those, this process ran git only as level 0's endpoint (upload-pack).
    assert.deepEqual([...new Set(calls.filter((c) => c.parent !== "sh" && !wrappers.has(c.pid)).map((c) => c.command))], ["upload-pack"]);
    for (const name of l0.names) {
      const wt = join(levelPaths(root).workDir, name);
      const served = await git(["--git-dir", join(l0.exportsDir, `${name}.git`), "rev-parse", "HEAD"]);
      assert.equal(await git(["rev-parse", "HEAD"], { cwd: wt }), served);
      assert.equal(await git(["status", "--porcelain"], { cwd: wt }), "");
    }
  } finally {
    await l0.close();
  }
});

test("each repo's export and working-tree repo are made while the SSH handshake runs", async () => {
  // A parent that accepts the connection and never speaks: the handshake times out.
  const held: Socket[] = [];
  const silent = createServer((s) => { held.push(s); });
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    const port = (silent.address() as { port: number }).port;
    const err = await syncFromParent(syncOptions(l0, root, { parent: { host: "127.0.0.1", port, hostKeyFingerprint: "SHA256:x" }, connectTimeoutMs: 1_000 }))
      .then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof HsError && err.code === "ConnectTimeout", String(err));
    for (const name of l0.names) {
      assert.equal(await git(["--git-dir", join(levelPaths(root).reposDir, `${name}.git`), "symbolic-ref", "HEAD"]), "refs/heads/main");
      assert.equal(await git(["rev-parse", "--git-dir"], { cwd: join(levelPaths(root).workDir, name) }), ".git");
    }
  } finally {
    for (const s of held) s.destroy();
    silent.close();
    await l0.close();
  }
});

test("the export's heads, tags and HEAD mirror the parent's across syncs: added, renamed into a directory, deleted, and with packed-refs", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    const parent = join(l0.exportsDir, "tofu.git");
    const child = join(levelPaths(root).reposDir, "tofu.git");
    const refsOf = async (gitDir: string) => `${await git(["--git-dir", gitDir, "symbolic-ref", "HEAD"])}\n${await git(["--git-dir", gitDir, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"])}`;
    const g0 = (...args: string[]) => git(["--git-dir", parent, ...args]);
    const sync = () => syncFromParent(syncOptions(l0, root, { repoNames: ["tofu"] }));
    const head = await g0("rev-parse", "HEAD");
    const first = await g0("rev-list", "--max-parents=0", "HEAD");
    await g0("update-ref", "refs/heads/feat", first);
    await g0("tag", "v1", first);
    await sync();
    assert.equal(await refsOf(child), await refsOf(parent));
    // "feat" goes, "feat/x" comes (a file where a directory must go), a tag moves.
    await g0("update-ref", "-d", "refs/heads/feat");
    await g0("update-ref", "refs/heads/feat/x", head);
    await g0("tag", "-f", "v1", head);
    await sync();
    assert.equal(await refsOf(child), await refsOf(parent));
    // Refs packed in the child's export (git gc would): the mirror still deletes and moves them.
    await git(["--git-dir", child, "pack-refs", "--all"]);
    await g0("update-ref", "-d", "refs/heads/feat/x");
    await g0("update-ref", "refs/heads/other", first);
    await sync();
    assert.equal(await refsOf(child), await refsOf(parent));
    await git(["--git-dir", child, "fsck", "--strict", "--no-progress"]);
  } finally {
    await l0.close();
  }
});

test("a first fetch's pack goes to the index-pack started with it, whatever its size; a later small one stays in-process", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    // A threshold no demo pack reaches: only the early index-pack of a first fetch takes packs.
    const opts = syncOptions(l0, root, { repoNames: ["tofu", "packer"], divertMinObjects: 1_000_000 });
    const first = await gitCallsOf(join(l0.dir, "first"), async () => { await syncFromParent(opts); });
    assert.equal(first.filter((c) => c.command === "index-pack").length, 2);
    await addCommit(l0.checkouts.tofu!, { "modules/extra.tf": "# one more\n" }, "one more");
    await refreshExports({ repos: l0.checkouts, exportsDir: l0.exportsDir, secretPatterns: ["secrets.yaml", "*.key", "id_rsa*", "*.pem"], log: silentLogger() });
    const second = await gitCallsOf(join(l0.dir, "second"), async () => { await syncFromParent(opts); });
    assert.equal(second.filter((c) => c.command === "index-pack").length, 0);
    const wt = join(levelPaths(root).workDir, "tofu");
    assert.equal(await git(["rev-parse", "HEAD"], { cwd: wt }), await git(["rev-parse", "HEAD"], { cwd: l0.checkouts.tofu! }));
    await git(["--git-dir", join(levelPaths(root).reposDir, "tofu.git"), "fsck", "--strict", "--no-progress"]);
  } finally {
    await l0.close();
  }
});
