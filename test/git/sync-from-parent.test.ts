// syncFromParent end to end: over the SSH transport from a live endpoint, re-export, incremental byte counts, host-key pinning, and the
// worktree safety rules (canary secrets, local edits, untracked files in the way).
import { test } from "node:test";
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { readFile, stat, writeFile, chmod, mkdir, symlink, readlink } from "node:fs/promises";
import { startLevel0, git, run, syncOptions, type Level0 } from "../helpers/git-fixtures.js";
import { syncFromParent, type SyncFromParentOptions } from "../../src/git/sync-from-parent.js";
import { refreshExports, resolverFor } from "../../src/git/export-repos.js";
import { addCommit } from "../../src/demo/demo-repos.js";
import { silentLogger } from "../../src/log/logger.js";
import { levelPaths } from "../../src/config/level-layout.js";
import { HsError } from "../../src/domain/errors.js";
import { startSshEndpoint } from "../../src/ssh/ssh-endpoint.js";
import { AuthorizedKeyStore } from "../../src/ssh/authorized-key-store.js";
import { loadOrCreateLevelKeys } from "../../src/ssh/level-keys.js";
import { gitUploadPack } from "../../src/git/upload-pack.js";
import { readExportRefs } from "../../src/git/export-refs.js";
import type { ExportRefs } from "../../src/domain/level-api.js";

const PATTERNS = ["secrets.yaml", "*.key", "id_rsa*", "*.pem"];

function syncOpts(l0: Level0, root: string, over: Partial<SyncFromParentOptions> = {}): SyncFromParentOptions {
  return syncOptions(l0, root, over);
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; err?: HsError }> {
  try { await p; } catch (err) { assert.ok(err instanceof HsError, String(err)); return { code: err.code, err }; }
  return { code: "none" };
}

async function refresh(l0: Level0): Promise<void> {
  await refreshExports({ repos: l0.checkouts, exportsDir: l0.exportsDir, secretPatterns: PATTERNS, log: silentLogger() });
}

test("full sync: every repo at level 0's served commit, worktrees and exports fsck clean", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    const res = await syncFromParent(syncOpts(l0, root));
    assert.ok(res.bytes > 0);
    for (const r of res.repos) {
      const served = await git(["--git-dir", join(l0.exportsDir, `${r.name}.git`), "rev-parse", "HEAD"]);
      assert.equal(r.servedCommit, served);
      assert.equal(r.worktreeCommit, served);
      assert.equal(r.dirty, false);
      const wt = join(levelPaths(root).workDir, r.name);
      assert.equal(await git(["rev-parse", "HEAD"], { cwd: wt }), served);
      assert.equal(await git(["status", "--porcelain", "--untracked-files=no"], { cwd: wt }), "");
      await git(["fsck", "--strict", "--no-progress"], { cwd: wt });
      await git(["--git-dir", join(levelPaths(root).reposDir, `${r.name}.git`), "fsck", "--strict", "--no-progress"]);
      // Tracked content equals the operator's checkout (HEAD is clean there).
      const a = await git(["ls-tree", "-r", "HEAD"], { cwd: wt });
      const b = await git(["ls-tree", "-r", "HEAD"], { cwd: l0.checkouts[r.name] });
      assert.equal(a, b);
    }
  } finally {
    await l0.close();
  }
});

test("level 1 re-exports exactly what it fetched; level 2 syncs from level 1", async () => {
  const l0 = await startLevel0();
  let ep1: Awaited<ReturnType<typeof startSshEndpoint>> | undefined;
  try {
    // Make level 0 serve a _working snapshot that differs from main.
    await writeFile(join(l0.checkouts.tofu!, "envs", "uncommitted.tf"), "# operator is editing\n");
    await refresh(l0);
    const root1 = join(l0.dir, "l1");
    await syncFromParent(syncOpts(l0, root1));
    const p1 = levelPaths(root1);
    const keys1 = await loadOrCreateLevelKeys(p1.keysDir, { name: "l1" });
    const store1 = new AuthorizedKeyStore(p1.accessKeys, silentLogger());
    await store1.addKey({ publicKey: l0.reader.publicKey, role: "reader" });
    ep1 = await startSshEndpoint({
      host: "127.0.0.1", port: 0, hostKeyPath: keys1.hostKeyPath, grpcSocketPath: p1.socket, keys: store1, uploadPack: gitUploadPack,
      repos: resolverFor(p1.reposDir, l0.names), maxUploadPacks: 8, queueTimeoutMs: 10_000, uploadPackTimeoutS: 30,
      authFailureDelayMs: 10, log: silentLogger(),
    });
    const adv0 = await git(["ls-remote", l0.url("tofu")], { env: l0.gitEnv() });
    const l1url = `ssh://hsd@127.0.0.1:${ep1.address().port}/tofu`;
    const kh = join(l0.dir, "kh1");
    const pub = await run("ssh-keygen", ["-y", "-f", keys1.hostKeyPath]);
    await writeFile(kh, `[127.0.0.1]:${ep1.address().port} ${pub.stdout.trim()}\n`);
    const env1 = { ...l0.gitEnv(), GIT_SSH_COMMAND: l0.gitEnv().GIT_SSH_COMMAND!.replace(l0.knownHosts, kh).replace(`-p ${l0.port}`, `-p ${ep1.address().port}`) };
    const adv1 = await git(["ls-remote", l1url], { env: env1 });
    assert.equal(adv1, adv0);
    const root2 = join(l0.dir, "l2");
    const res2 = await syncFromParent({
      ...syncOpts(l0, root2),
      parent: { host: "127.0.0.1", port: ep1.address().port, hostKeyFingerprint: ep1.hostKeyFingerprint },
    });
    const tofu = res2.repos.find((r) => r.name === "tofu")!;
    assert.equal(tofu.worktreeCommit, adv0.split("\t")[0]);
    assert.equal(await readFile(join(levelPaths(root2).workDir, "tofu", "envs", "uncommitted.tf"), "utf8"), "# operator is editing\n");
  } finally {
    await ep1?.close();
    await l0.close();
  }
});

test("after one new commit, a re-sync moves only that commit's objects", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    const first = await syncFromParent(syncOpts(l0, root));
    const again = await syncFromParent(syncOpts(l0, root));
    assert.deepEqual(again.repos.map((r) => r.servedCommit), first.repos.map((r) => r.servedCommit));
    const co = l0.checkouts["iac-driver"]!;
    const old = await git(["rev-parse", "HEAD"], { cwd: co });
    const text = Array.from({ length: 400 }, (_, i) => `line ${i} of a new module ${i * 7919 % 1000}`).join("\n");
    const fresh = await addCommit(co, { "src/actions/new_module.py": text }, "add new module");
    await refresh(l0);
    const commitPack = (await run("bash", ["-c", `printf '%s\\n^%s\\n' ${fresh} ${old} | git -C ${co} pack-objects --revs --stdout | wc -c`])).stdout.trim();
    const res = await syncFromParent(syncOpts(l0, root));
    const iac = res.repos.find((r) => r.name === "iac-driver")!;
    assert.equal(iac.worktreeCommit, fresh);
    assert.equal(iac.previousCommit, old);
    const packBytes = Number(commitPack);
    const moved = res.bytesByRepo["iac-driver"]!;
    // The advertisement and negotiation add a little; the history does not move again.
    assert.ok(moved < packBytes + 4096, `moved ${moved} vs commit pack ${packBytes}`);
    assert.ok(moved >= packBytes / 2, `moved ${moved} vs commit pack ${packBytes}`);
    assert.ok(res.bytes * 20 < first.bytes, `incremental ${res.bytes} vs full ${first.bytes}`);
    for (const r of res.repos) if (r.name !== "iac-driver") assert.equal(r.previousCommit, undefined);
  } finally {
    await l0.close();
  }
});

test("parent refs: a repo whose export already holds them is not asked for; one that differs, or is not named, is fetched", async () => {
  const asked: string[] = [];
  const l0 = await startLevel0({
    uploadPack: { ...gitUploadPack, serve: (o) => { asked.push(basename(o.repoPath, ".git")); return gitUploadPack.serve(o); } },
  });
  try {
    const root = join(l0.dir, "l1");
    const first = await syncFromParent(syncOpts(l0, root));
    assert.equal(asked.length, l0.names.length);
    const co = l0.checkouts["iac-driver"]!;
    const fresh = await addCommit(co, { "src/actions/hinted.py": "x = 1\n" }, "one commit");
    await refresh(l0);
    const served = async () => Object.fromEntries(await Promise.all(l0.names.map(async (n) => [n, (await readExportRefs(join(l0.exportsDir, `${n}.git`)))!] as const)));
    const parentRefs: Record<string, ExportRefs> = await served();
    // What the parent says for tofu does not match what level 1 holds (a tag it lacks): tofu is fetched.
    parentRefs.tofu = { ...parentRefs.tofu!, refs: { ...parentRefs.tofu!.refs, "refs/tags/only-said": parentRefs.tofu!.refs[parentRefs.tofu!.head]! } };
    // ansible is not named: fetched as before.
    delete parentRefs.ansible;
    asked.length = 0;
    const res = await syncFromParent(syncOpts(l0, root, { parentRefs }));
    assert.deepEqual([...asked].sort(), ["ansible", "iac-driver", "tofu"]);
    const byName = new Map(res.repos.map((r) => [r.name, r]));
    assert.equal(byName.get("iac-driver")!.worktreeCommit, fresh);
    for (const r of first.repos) {
      if (r.name === "iac-driver") continue;
      assert.equal(byName.get(r.name)!.servedCommit, r.servedCommit, r.name);
      assert.equal(byName.get(r.name)!.worktreeCommit, r.servedCommit, r.name);
    }
    // Every export now holds what level 0 serves: told so, level 1 asks for nothing, and
    // still reports a local edit in a tree it did not fetch for.
    const tofuTree = join(levelPaths(root).workDir, "tofu");
    const tracked = (await git(["ls-files"], { cwd: tofuTree })).split("\n")[0]!;
    await writeFile(join(tofuTree, tracked), "edited at level 1\n");
    asked.length = 0;
    const again = await syncFromParent(syncOpts(l0, root, { parentRefs: await served() }));
    assert.deepEqual(asked, []);
    assert.equal(again.bytes, 0);
    assert.equal(again.repos.find((r) => r.name === "iac-driver")!.servedCommit, fresh);
    const tofu = again.repos.find((r) => r.name === "tofu")!;
    assert.deepEqual([tofu.dirty, tofu.dirtyFiles], [true, [tracked]]);
    assert.equal(tofu.worktreeCommit, tofu.servedCommit);
    assert.equal(await readFile(join(tofuTree, tracked), "utf8"), "edited at level 1\n");
    for (const r of again.repos) if (r.name !== "tofu") assert.equal(r.dirty, false, r.name);
  } finally {
    await l0.close();
  }
});

test("a pinned host key that does not match fails with HostKeyMismatch", async () => {
  const l0 = await startLevel0();
  try {
    const wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const r = await codeOf(syncFromParent(syncOpts(l0, join(l0.dir, "l1"), {
      parent: { host: "127.0.0.1", port: l0.port, hostKeyFingerprint: wrong },
    })));
    assert.equal(r.code, "HostKeyMismatch");
    assert.equal(r.err?.details.expected, wrong);
    assert.equal(r.err?.details.actual, l0.endpoint.hostKeyFingerprint);
  } finally {
    await l0.close();
  }
});

test("a key the parent does not know is refused with AccessDenied", async () => {
  const l0 = await startLevel0();
  try {
    const { makeKeyPair } = await import("../helpers/git-fixtures.js");
    const stranger = await makeKeyPair(l0.dir, "stranger");
    const r = await codeOf(syncFromParent(syncOpts(l0, join(l0.dir, "l1"), { userKeyPath: stranger.privatePath })));
    assert.equal(r.code, "AccessDenied");
  } finally {
    await l0.close();
  }
});

test("a repo the parent does not export fails with RepoNotFound", async () => {
  const l0 = await startLevel0();
  try {
    const r = await codeOf(syncFromParent(syncOpts(l0, join(l0.dir, "l1"), { repoNames: ["tofu", "no-such-repo"] })));
    assert.equal(r.code, "RepoNotFound");
  } finally {
    await l0.close();
  }
});

test("nothing listens: ConnectTimeout or PeerGone, never a hang", async () => {
  const l0 = await startLevel0();
  const port = l0.port;
  await l0.endpoint.close();
  try {
    const r = await codeOf(syncFromParent(syncOpts(l0, join(l0.dir, "l1"), { parent: { host: "127.0.0.1", port, hostKeyFingerprint: "SHA256:x" }, connectTimeoutMs: 2_000 })));
    assert.ok(r.code === "PeerGone" || r.code === "ConnectTimeout", r.code);
  } finally {
    await l0.close();
  }
});

test("the canary secrets.yaml in site-config's worktree stays byte-identical and 0600 across syncs", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    await syncFromParent(syncOpts(l0, root));
    const canary = join(levelPaths(root).workDir, "site-config", "secrets.yaml");
    const secret = `passwords: { vm_root: "canary-${Date.now()}" }\n`;
    await writeFile(canary, secret, { mode: 0o600 });
    await chmod(canary, 0o600);
    const ignoredOther = join(levelPaths(root).workDir, "site-config", "local.local.yaml");
    await writeFile(ignoredOther, "mine\n");
    for (let i = 0; i < 3; i++) {
      await addCommit(l0.checkouts["site-config"]!, { [`envs/e${i}.yaml`]: `env: ${i}\n` }, `env ${i}`);
      await refresh(l0);
      const res = await syncFromParent(syncOpts(l0, root));
      const sc = res.repos.find((r) => r.name === "site-config")!;
      assert.equal(sc.worktreeCommit, await git(["rev-parse", "HEAD"], { cwd: l0.checkouts["site-config"] }));
      assert.equal(await readFile(canary, "utf8"), secret);
      assert.equal((await stat(canary)).mode & 0o777, 0o600);
      assert.equal(await readFile(ignoredOther, "utf8"), "mine\n");
    }
    // And it never travelled upward or sideways: not in level 1's export.
    const files = await git(["--git-dir", join(levelPaths(root).reposDir, "site-config.git"), "ls-tree", "-r", "--name-only", "HEAD"]);
    assert.ok(!files.split("\n").includes("secrets.yaml"));
  } finally {
    await l0.close();
  }
});

test("local edits to tracked files are never overwritten: DirtyWorktree names them", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    await syncFromParent(syncOpts(l0, root));
    const wt = join(levelPaths(root).workDir, "ansible");
    const file = (await git(["ls-files"], { cwd: wt })).split("\n").find((f) => f.endsWith(".yml"))!;
    await writeFile(join(wt, file), "local hotfix\n");
    const before = await git(["rev-parse", "HEAD"], { cwd: wt });
    await addCommit(l0.checkouts.ansible!, { "playbooks/new.yml": "- hosts: all\n" }, "new playbook");
    await refresh(l0);
    const r = await codeOf(syncFromParent(syncOpts(l0, root)));
    assert.equal(r.code, "DirtyWorktree");
    const repos = r.err!.details.repos as { name: string; files: string[] }[];
    assert.deepEqual(repos, [{ name: "ansible", files: [file] }]);
    assert.equal(await readFile(join(wt, file), "utf8"), "local hotfix\n");
    assert.equal(await git(["rev-parse", "HEAD"], { cwd: wt }), before);
    // The export still advanced: children can get the new commit.
    const states = r.err!.details.states as { name: string; servedCommit: string; dirty: boolean }[];
    const ans = states.find((s) => s.name === "ansible")!;
    assert.equal(ans.servedCommit, await git(["rev-parse", "HEAD"], { cwd: l0.checkouts.ansible }));
    assert.equal(ans.dirty, true);
  } finally {
    await l0.close();
  }
});

test("an untracked file where the new commit adds one is not overwritten", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    await syncFromParent(syncOpts(l0, root));
    const wt = join(levelPaths(root).workDir, "packer");
    await mkdir(join(wt, "templates"), { recursive: true });
    await writeFile(join(wt, "templates", "mine.pkr.hcl"), "local draft\n");
    await addCommit(l0.checkouts.packer!, { "templates/mine.pkr.hcl": "upstream\n" }, "upstream adds mine");
    await refresh(l0);
    const r = await codeOf(syncFromParent(syncOpts(l0, root)));
    assert.equal(r.code, "DirtyWorktree");
    assert.deepEqual((r.err!.details.repos as { files: string[] }[])[0]!.files, ["templates/mine.pkr.hcl"]);
    assert.equal(await readFile(join(wt, "templates", "mine.pkr.hcl"), "utf8"), "local draft\n");
  } finally {
    await l0.close();
  }
});

test("an ignored file where the new commit adds one is not overwritten (git would)", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    await syncFromParent(syncOpts(l0, root));
    const wt = join(levelPaths(root).workDir, "site-config");
    await writeFile(join(wt, "site.local.yaml"), "ignored but mine\n");
    // Upstream force-adds a file at that ignored path.
    const co = l0.checkouts["site-config"]!;
    await writeFile(join(co, "site.local.yaml"), "upstream\n");
    await git(["add", "-f", "site.local.yaml"], { cwd: co });
    await git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "force-add"], { cwd: co });
    await refresh(l0);
    const r = await codeOf(syncFromParent(syncOpts(l0, root)));
    assert.equal(r.code, "DirtyWorktree");
    assert.equal(await readFile(join(wt, "site.local.yaml"), "utf8"), "ignored but mine\n");
  } finally {
    await l0.close();
  }
});

test("an untracked symlink in a new file's path is not followed or replaced", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    await syncFromParent(syncOpts(l0, root));
    const wt = join(levelPaths(root).workDir, "tofu");
    const outside = join(l0.dir, "outside");
    await mkdir(outside);
    await symlink(outside, join(wt, "newdir"));
    await addCommit(l0.checkouts.tofu!, { "newdir/main.tf": "resource {}\n" }, "newdir");
    await refresh(l0);
    const r = await codeOf(syncFromParent(syncOpts(l0, root)));
    assert.equal(r.code, "DirtyWorktree");
    assert.equal(await readlink(join(wt, "newdir")), outside);
    assert.equal((await run("ls", ["-A", outside])).stdout, "");
  } finally {
    await l0.close();
  }
});

test("a first checkout into a directory that already has a file at a tracked path leaves it alone", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    const tracked = (await git(["ls-files"], { cwd: l0.checkouts.tofu! })).split("\n")[0]!;
    const wt = join(levelPaths(root).workDir, "tofu");
    await mkdir(join(wt, tracked, ".."), { recursive: true });
    await writeFile(join(wt, tracked), "was here first\n");
    const r = await codeOf(syncFromParent(syncOpts(l0, root)));
    assert.equal(r.code, "DirtyWorktree");
    assert.deepEqual((r.err!.details.repos as { name: string; files: string[] }[]), [{ name: "tofu", files: [tracked] }]);
    assert.equal(await readFile(join(wt, tracked), "utf8"), "was here first\n");
  } finally {
    await l0.close();
  }
});
