// End to end: `hsctl sync` over a depth-3 tree of real hsd processes. An
// unchanged tree moves no pack; one commit at level 0 reaches every level
// with bytes close to git's own pack for it; a level with local edits is
// reported dirty and its edits survive the sync byte for byte while the wave
// goes on below it.
//
// Byte reference: `git pack-objects --stdout --revs` over old..new in level
// 0's export, i.e. the pack the git CLI would send for that commit. A level's
// per-repo bytes also hold that repo's ref advertisement and sideband framing,
// so the commit is made a few KB of incompressible text to keep the pack the
// dominant part; the bound is 2x either way. Each parent sends its refs with
// the request, so a child asks only for the repos that changed: the parents'
// logs show one upload-pack per hop for a one-commit wave, none for no change.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, readFile, appendFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { hsctl, jsonLines, hsdProcessesUnder } from "../helpers/hsctl.js";
import { addCommit } from "../../src/demo/demo-repos.js";

const root = await mkdtemp(join(tmpdir(), "hsd-syncwave-"));
const env = { HSD_ROOT: join(root, "l0") };
const REPO = "iac-driver";
const LEVELS = ["l0", "l0/l1", "l0/l1/l2", "l0/l1/l2/l3"];
const l2Root = join(env.HSD_ROOT, "state/levels/l1/state/levels/l2");

after(async () => {
  await hsctl(["destroy", "--json"], env, 60_000).catch(() => undefined);
  for (const pid of await hsdProcessesUnder(root)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  await rm(root, { recursive: true, force: true });
});

type Repo = { name: string; servedCommit: string; worktreeCommit: string; dirty: boolean; dirtyFiles: string[]; previousCommit?: string; bytes?: number; syncState?: string };
type Status = { name: string; state: string; sync: string; dirty: boolean; repos: Repo[]; children: Status[] };

const exportGit = (args: string[], input?: string) => {
  const r = spawnSync("git", ["--git-dir", join(env.HSD_ROOT, "repos", `${REPO}.git`), ...args], { input, maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, r.stderr?.toString());
  return r.stdout;
};

/** Final (finished or failed) sync event per level. */
function outcomes(stdout: string): Map<string, Record<string, any>> {
  const m = new Map<string, Record<string, any>>();
  for (const e of jsonLines(stdout)) if (e.phase === "sync" && (e.kind === "finished" || e.kind === "failed")) m.set(e.level, e);
  return m;
}

/** Each parent level's hsd.log (l0, l1, l2): the levels that serve upload-pack to the next one down. */
const parentLogs = [join(env.HSD_ROOT, "hsd.log"), join(env.HSD_ROOT, "state/levels/l1/hsd.log"), join(l2Root, "hsd.log")];

/** The repos each parent served an upload-pack for since `since` (epoch ms), one entry per upload-pack. */
async function uploadPacksSince(since: number): Promise<string[][]> {
  return Promise.all(parentLogs.map(async (f) => (await readFile(f, "utf8")).split("\n").filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { time: number; msg: string; repo?: string })
    .filter((e) => e.time >= since && e.msg === "upload-pack finished").map((e) => e.repo ?? "?")));
}

async function status(): Promise<Status[]> {
  const s = await hsctl(["status", "--json"], env, 30_000);
  assert.equal(s.code, 0, s.stderr);
  const chain: Status[] = [];
  for (let n: Status | undefined = JSON.parse(s.stdout); n; n = n.children[0]) chain.push(n);
  return chain;
}

test("depth 3: unchanged sync moves no pack; one commit reaches every level with bytes within 2x of git's pack", async () => {
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 180_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-3000)}`);

  // Nothing changed: every level finishes, no repo moves, no pack comes down.
  const noop = await hsctl(["sync", "--json"], env, 60_000);
  assert.equal(noop.code, 0, noop.stderr);
  const n0 = outcomes(noop.stdout);
  assert.deepEqual([...n0.keys()].sort(), LEVELS);
  for (const [lvl, e] of n0) {
    assert.equal(e.kind, "finished", lvl);
    assert.ok(e.repos.every((x: Repo) => !x.previousCommit), `${lvl} moved a repo on an unchanged sync`);
  }
  // Nothing changed since that sync (which also took in whatever level 0's demo checkouts, placed
  // behind its first export, changed in its refs): each parent sends its refs with the request, every
  // child already holds them, and no parent runs upload-pack.
  const quietAt = Date.now();
  const quiet = await hsctl(["sync", "--json"], env, 60_000);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.deepEqual(await uploadPacksSince(quietAt), [[], [], []], "upload-packs on an unchanged sync");
  const old = exportGit(["rev-parse", "HEAD"]).toString().trim();

  const content = randomBytes(4500).toString("base64").replace(/(.{76})/g, "$1\n");
  const commit = await addCommit(join(env.HSD_ROOT, "demo", REPO), { "src/actions/sync_wave_test.py": content }, "sync wave test");
  const waveAt = Date.now();
  const s = await hsctl(["sync", "--json"], env, 60_000);
  assert.equal(s.code, 0, s.stderr + s.stdout.slice(-2000));
  // Only the changed repo is asked for at each hop: one upload-pack per parent, for it.
  assert.deepEqual(await uploadPacksSince(waveAt), [[REPO], [REPO], [REPO]], "upload-packs on a one-commit sync");
  const refPack = exportGit(["pack-objects", "--stdout", "--revs"], `${commit}\n^${old}\n`).length;
  assert.ok(refPack > 0);
  const got = outcomes(s.stdout);
  assert.deepEqual([...got.keys()].sort(), LEVELS);
  for (const [lvl, e] of got) {
    assert.equal(e.kind, "finished", lvl);
    const repo = e.repos.find((x: Repo) => x.name === REPO) as Repo;
    assert.equal(repo.servedCommit, commit, `${lvl} serves the new commit`);
    assert.equal(repo.previousCommit, old, `${lvl} names the commit before`);
    if (lvl !== "l0") {
      assert.equal(repo.worktreeCommit, commit, `${lvl} checked it out`);
      const bytes = repo.bytes ?? 0;
      assert.ok(bytes <= 2 * refPack && bytes >= refPack / 2, `${lvl}: ${bytes} bytes for ${REPO} vs git pack ${refPack}`);
      // The other repos only exchanged refs: no pack of theirs moved.
      for (const other of e.repos as Repo[]) if (other.name !== REPO) assert.equal(other.previousCommit, undefined, `${lvl}/${other.name}`);
    }
  }
  const chain = await status();
  assert.deepEqual(chain.map((c) => c.sync), ["source", "in sync", "in sync", "in sync"]);
  for (const lvl of chain.slice(1)) assert.ok(lvl.repos.every((x) => x.syncState === "in-sync"), lvl.name);
});

test("a dirty working tree is reported and never overwritten; the wave goes on below it", async () => {
  const file = join(l2Root, "homestak", "iac", REPO, "README.md");
  await appendFile(file, "a local edit made at level 2\n");
  const before = await readFile(file);
  const st = await status();
  assert.equal(st[2]!.name, "l2");
  assert.equal(st[2]!.dirty, true);
  const dirtyRepo = st[2]!.repos.find((x) => x.name === REPO)!;
  assert.equal(dirtyRepo.dirty, true);
  assert.deepEqual(dirtyRepo.dirtyFiles, ["README.md"]);
  assert.ok(st.filter((_, i) => i !== 2).every((x) => !x.dirty), "only l2 is dirty (untracked secrets are not edits)");

  const commit = await addCommit(join(env.HSD_ROOT, "demo", REPO), { "README.md": "# iac-driver\n\nchanged upstream\n" }, "touch the edited file");
  const s = await hsctl(["sync", "--json"], env, 60_000);
  assert.equal(s.code, 1, "a held worktree fails the sync");
  const got = outcomes(s.stdout);
  assert.equal(got.get("l0/l1/l2")?.kind, "failed");
  assert.equal(got.get("l0/l1/l2")?.failure?.code, "DirtyWorktree");
  assert.match(s.stderr, /l0\/l1\/l2/);
  assert.deepEqual(await readFile(file), before, "the local edit survives byte-identical");
  // l2's export still moved (only its checkout was held), so l3 got the commit.
  for (const lvl of ["l0/l1", "l0/l1/l2/l3"]) {
    assert.equal(got.get(lvl)?.kind, "finished", lvl);
    assert.equal(got.get(lvl)!.repos.find((x: Repo) => x.name === REPO).servedCommit, commit, lvl);
  }
  const after2 = await status();
  const l2repo = after2[2]!.repos.find((x) => x.name === REPO)!;
  assert.equal(l2repo.servedCommit, commit);
  assert.notEqual(l2repo.worktreeCommit, commit, "the worktree was held at its old commit");
  assert.equal(after2[2]!.dirty, true);
});
