// fetchPack over a live endpoint and the system git upload-pack: what the
// parent's export serves (a new commit, a branch, an annotated tag, HEAD on
// another branch, then their removal) is mirrored exactly in one request;
// a pack damaged in transit is a typed error that moves no ref and leaves no
// file behind, and the next sync completes; an export with packed refs is
// fetched by isomorphic-git's fetch instead, to the same result.
import { test } from "node:test";
import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { readdir } from "node:fs/promises";
import { Transform } from "node:stream";
import { spawn } from "node:child_process";
import { startLevel0, git, syncOptions, type Level0 } from "../helpers/git-fixtures.js";
import { syncFromParent } from "../../src/git/sync-from-parent.js";
import { refreshExports } from "../../src/git/export-repos.js";
import { addCommit } from "../../src/demo/demo-repos.js";
import { silentLogger } from "../../src/log/logger.js";
import { levelPaths } from "../../src/config/level-layout.js";
import { HsError } from "../../src/domain/errors.js";
import { gitUploadPack, uploadPackEnv, UPLOAD_PACK_CONFIG } from "../../src/git/upload-pack.js";
import { ParentConnection } from "../../src/ssh/parent-connection.js";
import { FetchSession, sshRemoteUrl } from "../../src/git/ssh-http-plugin.js";
import { canFetchPack, fetchPack, readLocalRefs } from "../../src/git/fetch-pack.js";
import type { UploadPackServer } from "../../src/ssh/exec-channel.js";

const REPO = "iac-driver";
const ID = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"];

async function refresh(l0: Level0): Promise<void> {
  await refreshExports({ repos: l0.checkouts, exportsDir: l0.exportsDir, secretPatterns: ["secrets.yaml"], log: silentLogger() });
}

/** An export's refs as git lists them: heads and tags with their objects, and HEAD's branch. */
async function refsOf(gitdir: string): Promise<{ refs: string; head: string }> {
  return {
    refs: await git(["--git-dir", gitdir, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"]),
    head: await git(["--git-dir", gitdir, "symbolic-ref", "HEAD"]),
  };
}

/** One fetchPack of REPO from level 0 into level 1's export, as a sync makes it. */
async function fetchOnce(l0: Level0, gitdir: string): Promise<string> {
  const conn = new ParentConnection({
    parent: { host: "127.0.0.1", port: l0.port, hostKeyFingerprint: l0.endpoint.hostKeyFingerprint },
    userKeyPath: l0.reader.privatePath, connectTimeoutMs: 10_000, log: silentLogger(),
  });
  const session = new FetchSession({ conn, commandTimeoutMs: 60_000, log: silentLogger(), indexPackInto: gitdir });
  try {
    const local = await readLocalRefs(gitdir);
    assert.ok(local, "level 1's export has loose refs only");
    const ad = await session.advertisement(REPO);
    assert.ok(canFetchPack(ad));
    return (await fetchPack({ session, url: sshRemoteUrl("127.0.0.1", l0.port, REPO), gitdir, ad, local, repo: REPO })).head;
  } finally {
    await session.close();
    conn.close();
  }
}

test("fetchPack mirrors a new commit, branch, annotated tag and HEAD switch in one request, then their removal, then a branch where one was removed", async () => {
  const asked: string[] = [];
  const l0 = await startLevel0({
    uploadPack: { ...gitUploadPack, serve: (o) => { asked.push(basename(o.repoPath, ".git")); return gitUploadPack.serve(o); } },
  });
  try {
    const root = join(l0.dir, "l1");
    await syncFromParent(syncOptions(l0, root));
    const parent = join(l0.exportsDir, `${REPO}.git`);
    const mine = join(levelPaths(root).reposDir, `${REPO}.git`);
    const defaultHead = await git(["--git-dir", parent, "symbolic-ref", "HEAD"]);
    await git(["--git-dir", mine, "update-ref", "refs/remotes/origin/_working", await git(["--git-dir", mine, "rev-parse", "HEAD"])]);
    await git(["--git-dir", mine, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/_working"]);

    const fresh = await addCommit(l0.checkouts[REPO]!, { "src/actions/fetched.py": "x = 1\n" }, "one commit");
    await refresh(l0);
    const tree = await git(["--git-dir", parent, "rev-parse", `${fresh}^{tree}`]);
    const side = await git(["--git-dir", parent, ...ID, "commit-tree", tree, "-p", fresh, "-m", "on a branch"]);
    await git(["--git-dir", parent, "update-ref", "refs/heads/feature/x", side]);
    await git(["--git-dir", parent, ...ID, "tag", "-a", "rel-1", "-m", "a release", fresh]);
    await git(["--git-dir", parent, "symbolic-ref", "HEAD", "refs/heads/feature/x"]);

    asked.length = 0;
    assert.equal(await fetchOnce(l0, mine), side);
    assert.deepEqual(asked, [REPO]);
    assert.deepEqual(await refsOf(mine), await refsOf(parent));
    // The remote-tracking refs isomorphic-git's fetch kept (set up below, as an older hsd left them) are gone: the export holds what the parent serves.
    assert.equal(await git(["--git-dir", mine, "for-each-ref", "refs/remotes"]), "");
    assert.equal(await git(["--git-dir", mine, "cat-file", "-t", "rel-1"]), "tag");
    await git(["--git-dir", mine, "fsck", "--strict", "--no-progress"]);
    assert.deepEqual((await readdir(mine)).filter((n) => n.startsWith("incoming-")), []);

    // Gone at the parent: gone here, with no object to move.
    await git(["--git-dir", parent, "symbolic-ref", "HEAD", defaultHead]);
    await git(["--git-dir", parent, "update-ref", "-d", "refs/heads/feature/x"]);
    await git(["--git-dir", parent, "tag", "-d", "rel-1"]);
    const packs = (await readdir(join(mine, "objects", "pack"))).sort();
    assert.equal(await fetchOnce(l0, mine), fresh);
    assert.deepEqual(await refsOf(mine), await refsOf(parent));

    assert.deepEqual((await readdir(join(mine, "objects", "pack"))).sort(), packs);
    await git(["--git-dir", mine, "fsck", "--strict", "--no-progress"]);

    // A branch where a gone branch's directory was ("feature" after "feature/x").
    await git(["--git-dir", parent, "update-ref", "refs/heads/feature", side]);
    assert.equal(await fetchOnce(l0, mine), fresh);
    assert.deepEqual(await refsOf(mine), await refsOf(parent));
  } finally {
    await l0.close();
  }
});

/** git upload-pack with one byte of the pack flipped on its way out (the 14th after "PACK"), while `armed` says so. */
function corruptingUploadPack(armed: () => boolean): UploadPackServer {
  return {
    ...gitUploadPack,
    serve: (o) => new Promise((resolve) => {
      if (!armed()) { resolve(gitUploadPack.serve(o)); return; }
      const args = UPLOAD_PACK_CONFIG.flatMap((c) => ["-c", c]);
      const child = spawn("git", [...args, "upload-pack", "--strict", "--timeout=30", o.repoPath], { env: uploadPackEnv() });
      let flipped = false;
      const flip = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          const at = flipped ? -1 : chunk.indexOf("PACK");
          if (at >= 0 && at + 14 < chunk.length) { chunk[at + 14] = chunk[at + 14]! ^ 0xff; flipped = true; }
          cb(null, chunk);
        },
      });
      o.channel.pipe(child.stdin);
      child.stdin.on("error", () => {});
      child.stdout.pipe(flip).pipe(o.channel, { end: false });
      child.on("close", (code) => { flip.end(() => { o.channel.exit(code ?? 1); o.channel.end(); resolve(code ?? 1); }); });
    }),
  };
}

test("a pack damaged in transit is GitProtocol: no ref moves, no file is left, and the next sync completes", async () => {
  let armed = false;
  const l0 = await startLevel0({ uploadPack: corruptingUploadPack(() => armed) });
  try {
    const root = join(l0.dir, "l1");
    const first = await syncFromParent(syncOptions(l0, root));
    const mine = join(levelPaths(root).reposDir, `${REPO}.git`);
    const before = await refsOf(mine);
    const packs = (await readdir(join(mine, "objects", "pack"))).sort();
    const fresh = await addCommit(l0.checkouts[REPO]!, { "src/actions/damaged.py": "y = 2\n".repeat(50) }, "one commit");
    await refresh(l0);

    armed = true;
    const code = await syncFromParent(syncOptions(l0, root, { repoNames: [REPO] })).then(() => "none", (err: unknown) => (err instanceof HsError ? err.code : String(err)));
    assert.equal(code, "GitProtocol");
    assert.deepEqual(await refsOf(mine), before);
    assert.deepEqual((await readdir(join(mine, "objects", "pack"))).sort(), packs);
    assert.deepEqual((await readdir(mine)).filter((n) => n.startsWith("incoming-")), []);
    assert.equal(await git(["rev-parse", "HEAD"], { cwd: join(levelPaths(root).workDir, REPO) }), first.repos.find((r) => r.name === REPO)!.servedCommit);

    armed = false;
    const res = await syncFromParent(syncOptions(l0, root));
    assert.equal(res.repos.find((r) => r.name === REPO)!.worktreeCommit, fresh);
    await git(["--git-dir", mine, "fsck", "--strict", "--no-progress"]);
  } finally {
    await l0.close();
  }
});

test("an export whose refs are packed takes isomorphic-git's fetch, to the same refs and trees", async () => {
  const l0 = await startLevel0();
  try {
    const root = join(l0.dir, "l1");
    await syncFromParent(syncOptions(l0, root));
    const mine = join(levelPaths(root).reposDir, `${REPO}.git`);
    await git(["--git-dir", mine, "pack-refs", "--all"]);
    assert.equal(await readLocalRefs(mine), undefined);
    const fresh = await addCommit(l0.checkouts[REPO]!, { "src/actions/packed.py": "z = 3\n" }, "one commit");
    await refresh(l0);
    const res = await syncFromParent(syncOptions(l0, root));
    assert.equal(res.repos.find((r) => r.name === REPO)!.worktreeCommit, fresh);
    assert.deepEqual(await refsOf(mine), await refsOf(join(l0.exportsDir, `${REPO}.git`)));
    await git(["--git-dir", mine, "fsck", "--strict", "--no-progress"]);
  } finally {
    await l0.close();
  }
});
