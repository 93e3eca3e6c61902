// refreshExports at level 0: _working snapshots without touching the operator's
// checkout, no-op refreshes, and secrets refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { readFile, writeFile, rm, stat, readdir, mkdir } from "node:fs/promises";
import { execSync } from "node:child_process";
import { tempDir, git, gitCallLog } from "../helpers/git-fixtures.js";
import { generateLargeRepo } from "../helpers/large-repo.js";
import { generateDemoRepos, addCommit } from "../../src/demo/demo-repos.js";
import { refreshExports, exportedRepoState, resolverFor, WORKING_REF } from "../../src/git/export-repos.js";
import { createLogger, silentLogger } from "../../src/log/logger.js";
import { SharedRunQueue } from "../../src/util/shared-run-queue.js";
import type { RepoState } from "../../src/domain/events.js";
import { HsError } from "../../src/domain/errors.js";

const PATTERNS = ["secrets.yaml", "*.key", "id_rsa*", "*.pem"];

async function setup() {
  const t = await tempDir();
  const checkouts = await generateDemoRepos(join(t.path, "op"), { seed: 3, scale: 0.2 });
  const exportsDir = join(t.path, "repos");
  const refresh = (repos = checkouts) => refreshExports({ repos, exportsDir, secretPatterns: PATTERNS, log: silentLogger() });
  return { t, checkouts, exportsDir, refresh };
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; err?: HsError }> {
  try { await p; } catch (err) { assert.ok(err instanceof HsError, String(err)); return { code: err.code, err }; }
  return { code: "none" };
}

async function looseObjects(checkout: string): Promise<string> {
  return git(["count-objects", "-v"], { cwd: checkout });
}

test("a clean checkout exports _working == HEAD, HEAD symref -> _working, plus its branch", async () => {
  const { t, checkouts, exportsDir, refresh } = await setup();
  try {
    const states = await refresh();
    for (const s of states) {
      const exp = join(exportsDir, `${s.name}.git`);
      assert.equal(s.servedCommit, await git(["rev-parse", "HEAD"], { cwd: checkouts[s.name] }));
      assert.equal(await git(["--git-dir", exp, "symbolic-ref", "HEAD"]), WORKING_REF);
      assert.equal(await git(["--git-dir", exp, "for-each-ref", "--format=%(refname)"]), "refs/heads/_working\nrefs/heads/main");
    }
    assert.deepEqual((await exportedRepoState(exportsDir, Object.keys(checkouts))).map((s) => s.servedCommit), states.map((s) => s.servedCommit));
    const resolve = resolverFor(exportsDir, ["tofu"]);
    assert.equal(resolve("tofu"), join(exportsDir, "tofu.git"));
    assert.equal(resolve("packer"), undefined);
  } finally {
    await t.cleanup();
  }
});

test("uncommitted work is snapshotted on _working without touching the operator's index, tree or objects", async () => {
  const { t, checkouts, exportsDir, refresh } = await setup();
  try {
    const co = checkouts.ansible!;
    const tracked = (await git(["ls-files"], { cwd: co })).split("\n")[1]!;
    await writeFile(join(co, tracked), "edited, not staged\n");
    await writeFile(join(co, "new-untracked.yml"), "brand new\n");
    await writeFile(join(co, ".gitignore"), "*.log\n");
    await writeFile(join(co, "debug.log"), "ignored\n");
    const indexBefore = await readFile(join(co, ".git", "index"));
    const statusBefore = await git(["status", "--porcelain"], { cwd: co });
    const objectsBefore = await looseObjects(co);
    const head = await git(["rev-parse", "HEAD"], { cwd: co });

    const [s] = await refresh({ ansible: co });
    const exp = join(exportsDir, "ansible.git");
    assert.notEqual(s!.servedCommit, head);
    assert.equal(await git(["--git-dir", exp, "rev-parse", `${s!.servedCommit}^`]), head);
    assert.equal(await git(["--git-dir", exp, "show", `${s!.servedCommit}:${tracked}`]), "edited, not staged");
    assert.equal(await git(["--git-dir", exp, "show", `${s!.servedCommit}:new-untracked.yml`]), "brand new");
    const files = (await git(["--git-dir", exp, "ls-tree", "-r", "--name-only", s!.servedCommit])).split("\n");
    assert.ok(!files.includes("debug.log"));
    assert.ok(files.includes(".gitignore"));

    assert.deepEqual(await readFile(join(co, ".git", "index")), indexBefore);
    assert.equal(await git(["status", "--porcelain"], { cwd: co }), statusBefore);
    assert.equal(await looseObjects(co), objectsBefore);

    // Unchanged since: the same commit, nothing moves.
    const [again] = await refresh({ ansible: co });
    assert.equal(again!.servedCommit, s!.servedCommit);
    assert.equal(again!.previousCommit, undefined);
    // A further edit makes a new snapshot on the same parent.
    await writeFile(join(co, "new-untracked.yml"), "changed again\n");
    const [third] = await refresh({ ansible: co });
    assert.notEqual(third!.servedCommit, s!.servedCommit);
    assert.equal(third!.previousCommit, s!.servedCommit);
    // Committing everything makes _working the commit itself.
    const committed = await addCommit(co, { [tracked]: "edited, not staged\n", "new-untracked.yml": "changed again\n", ".gitignore": "*.log\n" });
    const [fourth] = await refresh({ ansible: co });
    assert.equal(fourth!.servedCommit, committed);
  } finally {
    await t.cleanup();
  }
});

test("a tracked secrets.yaml is refused with SecretInRepo and nothing of that repo is exported", async () => {
  const { t, checkouts, exportsDir, refresh } = await setup();
  try {
    const co = checkouts["site-config"]!;
    await git(["add", "-f", "secrets.yaml"], { cwd: co });
    await git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "oops"], { cwd: co });
    const r = await codeOf(refresh());
    assert.equal(r.code, "SecretInRepo");
    assert.equal(r.err!.details.repo, "site-config");
    assert.equal(r.err!.details.file, "secrets.yaml");
    assert.equal(existsSync(join(exportsDir, "site-config.git")), false);
    // The other repos were still exported.
    assert.ok(existsSync(join(exportsDir, "tofu.git", "HEAD")));
  } finally {
    await t.cleanup();
  }
});

test("a staged (not yet committed) secret is refused", async () => {
  const { t, checkouts, refresh } = await setup();
  try {
    const co = checkouts.tofu!;
    await writeFile(join(co, "deploy.key"), "-----BEGIN PRIVATE KEY-----\n");
    await git(["add", "deploy.key"], { cwd: co });
    const r = await codeOf(refresh({ tofu: co }));
    assert.equal(r.code, "SecretInRepo");
    assert.equal(r.err!.details.file, "deploy.key");
  } finally {
    await t.cleanup();
  }
});

test("an untracked, not-ignored secret that would enter _working is refused", async () => {
  const { t, checkouts, exportsDir, refresh } = await setup();
  try {
    await refresh();
    const co = checkouts["site-config"]!;
    const before = await git(["--git-dir", join(exportsDir, "site-config.git"), "rev-parse", "HEAD"]);
    await writeFile(join(co, "nodes", "id_rsa"), "key material\n", { mode: 0o600 });
    const r = await codeOf(refresh({ "site-config": co }));
    assert.equal(r.code, "SecretInRepo");
    assert.equal(r.err!.details.file, "nodes/id_rsa");
    assert.equal(await git(["--git-dir", join(exportsDir, "site-config.git"), "rev-parse", "HEAD"]), before);
    // The blob was never hashed into the export.
    const blob = await git(["hash-object", join(co, "nodes", "id_rsa")]);
    const has = await git(["--git-dir", join(exportsDir, "site-config.git"), "cat-file", "-e", blob]).then(() => true, () => false);
    assert.equal(has, false);
  } finally {
    await t.cleanup();
  }
});

test("the ignored demo secrets.yaml stays out of every export and keeps its mode", async () => {
  const { t, checkouts, exportsDir, refresh } = await setup();
  try {
    const sec = join(checkouts["site-config"]!, "secrets.yaml");
    const before = await readFile(sec);
    await refresh();
    await refresh();
    const files = await git(["--git-dir", join(exportsDir, "site-config.git"), "ls-tree", "-r", "--name-only", "HEAD"]);
    assert.ok(!files.split("\n").includes("secrets.yaml"));
    assert.deepEqual(await readFile(sec), before);
    assert.equal((await stat(sec)).mode & 0o777, 0o600);
  } finally {
    await t.cleanup();
  }
});

test("a missing checkout is RepoNotFound", async () => {
  const { t, checkouts, refresh } = await setup();
  try {
    await rm(checkouts.packer!, { recursive: true });
    assert.equal((await codeOf(refresh({ packer: checkouts.packer! }))).code, "RepoNotFound");
  } finally {
    await t.cleanup();
  }
});

test("an unchanged checkout is skipped by the export stamp, but a same-size re-edit or a moved export ref is not", async () => {
  const { t, checkouts, exportsDir, refresh } = await setup();
  try {
    const co = checkouts.packer!;
    const exp = join(exportsDir, "packer.git");
    const tracked = (await git(["ls-files"], { cwd: co })).split("\n")[0]!;
    await writeFile(join(co, tracked), "version A\n");
    const [a] = await refresh({ packer: co });
    const [same] = await refresh({ packer: co });
    assert.equal(same!.servedCommit, a!.servedCommit);
    // Same size, same status line (" M"), different bytes: the lstat in the fingerprint sees it.
    await writeFile(join(co, tracked), "version B\n");
    const [b] = await refresh({ packer: co });
    assert.notEqual(b!.servedCommit, a!.servedCommit);
    assert.equal(await git(["--git-dir", exp, "show", `${b!.servedCommit}:${tracked}`]), "version B");
    // Someone moved the export's _working to HEAD: the next refresh snapshots again
    // (same tree and parent; the commit id may differ by its timestamp).
    const head = await git(["rev-parse", "HEAD"], { cwd: co });
    await git(["--git-dir", exp, "update-ref", WORKING_REF, head]);
    const [c] = await refresh({ packer: co });
    assert.notEqual(c!.servedCommit, head);
    assert.equal(await git(["--git-dir", exp, "rev-parse", WORKING_REF]), c!.servedCommit);
    assert.equal(await git(["--git-dir", exp, "rev-parse", `${c!.servedCommit}^{tree}`]), await git(["--git-dir", exp, "rev-parse", `${b!.servedCommit}^{tree}`]));
    assert.equal(await git(["--git-dir", exp, "rev-parse", `${c!.servedCommit}^`]), head);
  } finally {
    await t.cleanup();
  }
});

test("a secret that HEAD tracks is refused even when its deletion is only staged", async () => {
  const { t, checkouts, refresh } = await setup();
  try {
    const co = checkouts["site-config"]!;
    await git(["add", "-f", "secrets.yaml"], { cwd: co });
    await git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "oops"], { cwd: co });
    await git(["rm", "-q", "--cached", "secrets.yaml"], { cwd: co });
    const r = await codeOf(refresh({ "site-config": co }));
    assert.equal(r.code, "SecretInRepo");
    assert.equal(r.err!.details.file, "secrets.yaml");
  } finally {
    await t.cleanup();
  }
});

test("a first refresh links the checkout's packs instead of copying them; the operator's repo is unchanged", async () => {
  const t = await tempDir();
  try {
    const co = join(t.path, "op", "bulk");
    // Over fast-import's unpackLimit (100 objects), so the checkout holds a pack.
    await generateLargeRepo(co, { bytes: 2 * 1024 * 1024, fileBytes: 16 * 1024, commits: 3 });
    await writeFile(join(co, "uncommitted.txt"), "operator is editing\n");
    const packDir = join(co, ".git", "objects", "pack");
    const before = (await readdir(packDir)).sort();
    const pack = before.find((n) => n.endsWith(".pack"))!;
    const exportsDir = join(t.path, "repos");
    const [state] = await refreshExports({ repos: { bulk: co }, exportsDir, secretPatterns: PATTERNS, log: silentLogger() });
    const exp = join(exportsDir, "bulk.git");
    // The same file, not a copy.
    assert.equal((await stat(join(exp, "objects", "pack", pack))).ino, (await stat(join(packDir, pack))).ino);
    await git(["--git-dir", exp, "fsck", "--strict", "--no-progress"]);
    assert.equal(await git(["--git-dir", exp, "rev-parse", "refs/heads/main"]), await git(["rev-parse", "HEAD"], { cwd: co }));
    assert.equal(await git(["--git-dir", exp, "rev-parse", WORKING_REF]), state!.servedCommit);
    assert.deepEqual((await readdir(packDir)).sort(), before);
    assert.equal(await git(["status", "--porcelain"], { cwd: co }), "?? uncommitted.txt");
  } finally {
    await t.cleanup();
  }
});

test("with a queue, a refresh asked for while another still waits for the checkout shares it: one read, one export", async () => {
  const t = await tempDir();
  try {
    const checkouts = await generateDemoRepos(join(t.path, "op"), { seed: 5, scale: 0.2 });
    const repos = { tofu: checkouts.tofu!, packer: checkouts.packer! };
    const exportsDir = join(t.path, "repos");
    const lines: string[] = [];
    const log = createLogger({ level: "debug", destination: { write: (l: string) => { lines.push(l); } } as unknown as import("pino").DestinationStream });
    let open!: () => void;
    const generated = new Promise<void>((res) => { open = res; });
    const queue = new SharedRunQueue<RepoState>();
    const refresh = () => refreshExports({ repos, exportsDir, secretPatterns: PATTERNS, log, ready: () => generated, queue });
    // Level 0's start-up export, then a nest's refresh, both before the checkouts "exist".
    const atStart = refresh();
    const forNest = refresh();
    open();
    const [a, b] = await Promise.all([atStart, forNest]);
    assert.deepEqual(b, a);
    const msgs = lines.map((l) => JSON.parse(l) as { msg: string; repo?: string }).filter((l) => l.repo && /^export /.test(l.msg));
    // Each repo read and exported once: no second pass finding it "unchanged".
    assert.deepEqual(msgs.map((m) => `${m.repo} ${m.msg}`).sort(), ["packer export refreshed", "tofu export refreshed"]);
    // A refresh asked for once those are done reads the checkouts again.
    await refresh();
    assert.equal(lines.map((l) => JSON.parse(l) as { msg: string }).filter((l) => l.msg === "export unchanged").length, 2);
  } finally {
    await t.cleanup();
  }
});

/** Runs `fn` with a `git` first on PATH that logs each command line (then runs the real git); returns those lines. */
function gitCommandsOf(dir: string, fn: () => Promise<unknown>): Promise<string[]> {
  return gitCallLog(dir, "", fn);
}

test("a first export of a clean checkout runs git four times: status, ls-files, fetch, update-ref", async () => {
  const { t, checkouts, exportsDir } = await setup();
  try {
    const tofu = { tofu: checkouts.tofu! };
    const lines = await gitCommandsOf(t.path, () => refreshExports({ repos: tofu, exportsDir, secretPatterns: PATTERNS, log: silentLogger() }));
    // The git dir is read from the checkout's .git, a new export's HEAD names _working from the start, and it has no other refs to list.
    assert.deepEqual(lines.map((l) => l.split(" ").find((w) => !w.startsWith("-") && !w.startsWith("/"))), ["status", "ls-files", "fetch", "update-ref"]);
    const exp = join(exportsDir, "tofu.git");
    assert.equal(await git(["--git-dir", exp, "symbolic-ref", "HEAD"]), WORKING_REF);
    assert.equal(await git(["--git-dir", exp, "for-each-ref", "--format=%(refname)"]), "refs/heads/_working\nrefs/heads/main");
    assert.equal(await git(["--git-dir", exp, "rev-parse", "HEAD"]), await git(["rev-parse", "HEAD"], { cwd: checkouts.tofu }));
    await git(["--git-dir", exp, "fsck", "--strict", "--no-dangling"]);
  } finally {
    await t.cleanup();
  }
});

test("a linked worktree (a .git file) is exported through git's own answer for its git dir", async () => {
  const { t, checkouts, exportsDir } = await setup();
  try {
    const linked = join(t.path, "linked-packer");
    await git(["worktree", "add", "-q", "-b", "side", linked], { cwd: checkouts.packer });
    await writeFile(join(linked, "notes.md"), "uncommitted\n");
    const [state] = await refreshExports({ repos: { packer: linked }, exportsDir, secretPatterns: PATTERNS, log: silentLogger() });
    const exp = join(exportsDir, "packer.git");
    assert.equal(await git(["--git-dir", exp, "symbolic-ref", "HEAD"]), WORKING_REF);
    assert.equal(await git(["--git-dir", exp, "rev-parse", "_working^"]), await git(["rev-parse", "HEAD"], { cwd: linked }));
    assert.equal(state!.servedCommit, await git(["--git-dir", exp, "rev-parse", "_working"]));
    assert.equal(await git(["--git-dir", exp, "show", "_working:notes.md"]), "uncommitted");
    assert.equal(await git(["--git-dir", exp, "for-each-ref", "--format=%(refname)"]), "refs/heads/_working\nrefs/heads/side");
  } finally {
    await t.cleanup();
  }
});

test("exportedRepoState reads what git reads as HEAD: a loose branch, packed-refs, a detached HEAD, an unborn branch, no export", async () => {
  const { t, checkouts, exportsDir, refresh } = await setup();
  try {
    await refresh();
    const [tofu, packer, ansible, iac] = ["tofu", "packer", "ansible", "iac-driver"].map((n) => join(exportsDir, `${n}.git`)) as [string, string, string, string];
    await git(["--git-dir", packer, "pack-refs", "--all"]);
    const first = await git(["--git-dir", ansible, "rev-list", "--max-parents=0", "HEAD"]);
    await writeFile(join(ansible, "HEAD"), `${first}\n`);
    await writeFile(join(iac, "HEAD"), "ref: refs/heads/none-yet\n");
    await rm(join(exportsDir, "bootstrap.git"), { recursive: true });
    const want = async (exp: string) => git(["--git-dir", exp, "rev-parse", "--verify", "-q", "HEAD"]).catch(() => "");
    const got = new Map((await exportedRepoState(exportsDir, Object.keys(checkouts))).map((s) => [s.name, s.servedCommit]));
    assert.equal(got.get("tofu"), await want(tofu));
    assert.equal(got.get("packer"), await want(packer));
    assert.ok(existsSync(join(packer, "packed-refs")) && !existsSync(join(packer, "refs", "heads", "_working")), "refs not packed");
    assert.equal(got.get("ansible"), first);
    assert.equal(got.get("iac-driver"), "");
    assert.equal(got.get("bootstrap"), "");
  } finally {
    await t.cleanup();
  }
});
