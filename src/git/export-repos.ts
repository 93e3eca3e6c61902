// The exported repo set at level 0: one bare repo per name, refreshed from the
// operator's working checkout (its HEAD branch plus a `_working` snapshot of
// uncommitted, non-ignored changes) without touching the operator's index,
// working tree or object store; a checkout unchanged since the last refresh (a
// stamp in the export) costs one `git status`. Also reports what any level
// serves.
// Imported by: src/daemon, src/git, src/level.

import * as fs from "node:fs";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, copyFile, lstat, readFile, readdir, link } from "node:fs/promises";
import isogit from "isomorphic-git";
import { basename, isAbsolute, join, resolve } from "node:path";
import { tmpdir } from "node:os";
import type { Logger } from "../log/logger.js";
import type { RepoState } from "../domain/events.js";
import { SecretInRepoError, RepoNotFoundError } from "../domain/errors.js";
import { runGit, gitText, gitList } from "./run-git.js";
import { initRepo } from "./init-repo.js";
import type { SharedRunQueue } from "../util/shared-run-queue.js";
import { settleAll } from "../util/settle-all.js";
import { readStamp, statusFingerprint, writeExportStamp, type ExportStamp } from "./export-stamp.js";
import { headCommit } from "./loose-refs.js";

/** The branch whose tip is the operator's working state; the export's HEAD points at it. */
export const WORKING_BRANCH = "_working";
export const WORKING_REF = `refs/heads/${WORKING_BRANCH}`;

export interface RefreshExportsOptions {
  /** name -> operator checkout path. */
  repos: Readonly<Record<string, string>>;
  /** levelPaths(root).reposDir. */
  exportsDir: string;
  /** Basename globs (secrets.yaml, *.key, id_rsa*, *.pem). */
  secretPatterns: readonly string[];
  log: Logger;
  /** Settles when a repo's checkout may be read (each repo is refreshed as soon as its own is there). */
  ready?: (name: string) => Promise<void>;
  /**
   * Refreshes of one repo, one at a time across calls; a call made while an
   * earlier one still waits to read that checkout shares it (level 0's
   * start-up export and a nest's refresh, both asked for before a demo
   * checkout exists, are one refresh). Absent: each call refreshes on its own.
   */
  queue?: SharedRunQueue<RepoState>;
  /**
   * A repo whose checkout hsd itself is still placing, with its export
   * already written from the same commits (seed-export.ts): that export's
   * state, or undefined once the checkout is in place (or was never seeded).
   * A refresh that starts while it answers returns it without waiting: no
   * operator's edit can exist yet, and the export is what a refresh of the
   * placed checkout writes.
   */
  seeded?: (name: string) => Promise<RepoState | undefined>;
}

export function exportPath(exportsDir: string, name: string): string {
  return join(exportsDir, `${name}.git`);
}

/** Compiles basename globs (only `*` and `?` are special). */
export function secretMatcher(patterns: readonly string[]): (path: string) => boolean {
  const res = patterns.map((p) => new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`));
  return (path) => {
    const base = basename(path);
    return res.some((re) => re.test(base));
  };
}

const SNAPSHOT_IDENTITY = {
  GIT_AUTHOR_NAME: "hsd", GIT_AUTHOR_EMAIL: "hsd@localhost",
  GIT_COMMITTER_NAME: "hsd", GIT_COMMITTER_EMAIL: "hsd@localhost",
};

/**
 * A bare repo with no user/system config influence (we own it); true when
 * this call created it. `head`: the branch a new repo's HEAD names; `config`:
 * more config text a new repo is written with (its remote).
 */
export async function ensureBareRepo(path: string, head?: string, config?: string): Promise<boolean> {
  if (existsSync(join(path, "HEAD"))) return false;
  await initRepo(path, { bare: true, ...(head ? { head } : {}), ...(config ? { config } : {}) });
  return true;
}

/**
 * A checkout's git dir and object store. A plain `.git` directory that is not
 * a linked worktree (no commondir) is read without a spawn: then git's answer
 * is that directory and its objects/. Anything else (a gitfile, a linked
 * worktree, no .git here) asks git.
 */
async function checkoutGitDirs(checkout: string): Promise<{ gitDir: string; objectsDir: string }> {
  const dotGit = join(checkout, ".git");
  const plain = await lstat(dotGit).then((st) => st.isDirectory(), () => false);
  if (plain && !existsSync(join(dotGit, "commondir")) && existsSync(join(dotGit, "objects"))) {
    return { gitDir: dotGit, objectsDir: join(dotGit, "objects") };
  }
  const [gitDirLine, objectsLine] = (await gitText(["rev-parse", "--absolute-git-dir", "--git-path", "objects"], { cwd: checkout })).split("\n");
  return { gitDir: gitDirLine!, objectsDir: resolve(checkout, objectsLine!) };
}

interface CheckoutStatus {
  /** HEAD commit, "" when unborn. */
  head: string;
  /** "refs/heads/<name>", "" when detached. */
  branchRef: string;
  /** Paths HEAD has and the index no longer does (staged deletions). */
  stagedGone: string[];
  /**
   * Status reported nothing: the index is HEAD's tree, every tracked file
   * matches it, and there is no untracked, non-ignored file. The snapshot
   * `add -A` would take is then HEAD's own tree.
   */
  clean: boolean;
  fingerprint: string;
}

/**
 * One `git status` (v2, -uall, no renames) describes everything the snapshot
 * depends on: HEAD, branch, every index entry that differs from HEAD (by
 * object id), every worktree change and every untracked, non-ignored file.
 * Worktree-side changes show only as flags, so their lstat (size, ns mtime,
 * ctime, inode, mode) goes into the fingerprint too: a file edited again is a
 * new fingerprint. Clean tracked files are git's own stat/racy-git check.
 * GIT_OPTIONAL_LOCKS=0: status must not refresh the operator's index.
 */
async function checkoutStatus(checkout: string, patterns: readonly string[]): Promise<CheckoutStatus> {
  const raw = (await runGit(["status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all", "--no-renames"], {
    cwd: checkout, env: { GIT_OPTIONAL_LOCKS: "0" },
  })).stdout.toString("utf8");
  let head = "";
  let branchRef = "";
  const stagedGone: string[] = [];
  const paths: string[] = [];
  let clean = true;
  for (const rec of raw.split("\0")) {
    if (rec !== "" && !rec.startsWith("# ")) clean = false;
    if (rec.startsWith("# branch.oid ")) { const v = rec.slice(13); head = v === "(initial)" ? "" : v; continue; }
    if (rec.startsWith("# branch.head ")) { const v = rec.slice(14); branchRef = v === "(detached)" ? "" : `refs/heads/${v}`; continue; }
    if (rec.startsWith("1 ")) {
      // "1 XY sub mH mI mW hH hI path": the path is everything after the 8th space.
      const path = rec.split(" ").slice(8).join(" ");
      if (rec[2] === "D") stagedGone.push(path);
      paths.push(path);
    } else if (rec.startsWith("u ")) paths.push(rec.split(" ").slice(10).join(" "));
    else if (rec.startsWith("? ")) paths.push(rec.slice(2));
  }
  const stats = await Promise.all(paths.map((p) => lstat(join(checkout, p), { bigint: true }).then(
    (st) => `${st.size}:${st.mtimeNs}:${st.ctimeNs}:${st.ino}:${st.mode}`, () => "-",
  )));
  return { head, branchRef, stagedGone, clean, fingerprint: statusFingerprint(checkout, patterns, raw, stats) };
}

/** The ref's commit in the export, "" when absent (isomorphic-git reads loose and packed refs without a spawn). */
async function exportRef(exp: string, ref: string): Promise<string> {
  return isogit.resolveRef({ fs, gitdir: exp, ref }).catch(() => "");
}

/** The stamp still describes both the checkout and the export: the refresh has nothing to do. */
async function stampHolds(exp: string, st: CheckoutStatus): Promise<ExportStamp | undefined> {
  const stamp = await readStamp(exp);
  if (!stamp || stamp.fingerprint !== st.fingerprint || stamp.head !== st.head || stamp.branchRef !== st.branchRef) return undefined;
  const headFile = (await readFile(join(exp, "HEAD"), "utf8").catch(() => "")).trim();
  if (headFile !== `ref: ${WORKING_REF}`) return undefined;
  if ((await exportRef(exp, WORKING_REF)) !== stamp.working) return undefined;
  if (st.head && st.branchRef && (await exportRef(exp, st.branchRef)) !== st.head) return undefined;
  return stamp;
}

/**
 * A first refresh would copy the whole branch through pack-objects and
 * index-pack (3 s for a 100 MB pack, where `git clone --local` takes 0.1 s by
 * hard-linking). Linking the checkout's packs into the new export instead
 * lets the fetch that follows find every object present and connected, so
 * it transfers only loose objects. Packs are immutable (git gc unlinks and
 * writes new ones), so the operator's repo is never changed through the link.
 * Objects of other branches come along but stay unreachable, and upload-pack
 * never serves an object its advertised refs do not reach. Another
 * filesystem (EXDEV) or any other failure: the plain fetch copies instead.
 */
async function linkCheckoutPacks(objectsDir: string, exp: string, log: Logger): Promise<void> {
  const src = join(objectsDir, "pack");
  const dst = join(exp, "objects", "pack");
  try {
    const names = await readdir(src);
    const has = new Set(names);
    for (const n of names) {
      const m = /^(pack-[0-9a-f]+)\.pack$/.exec(n);
      // A promisor pack means a partial clone: its objects' missing links must not look complete here.
      if (!m || !has.has(`${m[1]}.idx`) || has.has(`${m[1]}.promisor`)) continue;
      // .pack before .idx: git sees a pack only once its index exists.
      await link(join(src, n), join(dst, n)).catch(ignoreExists);
      await link(join(src, `${m[1]}.idx`), join(dst, `${m[1]}.idx`)).catch(ignoreExists);
    }
  } catch (err) {
    log.debug({ err: (err as Error).message }, "checkout packs not linked; the fetch copies them");
  }
}

function ignoreExists(err: NodeJS.ErrnoException): void {
  if (err.code !== "EEXIST") throw err;
}

/**
 * Spawns per repo (each blocks the daemon's event loop for its fork): an
 * unchanged checkout 1 (status); a first export of a clean checkout (a fresh
 * clone, or level 0's demo set) 4: status, ls-files, fetch, update-ref (its
 * git dir read without rev-parse, nothing to list or re-point in a new
 * export); a clean one at a new commit 5; one with uncommitted work about 8
 * (was 19 before the status-derived HEAD/branch, the merged ls-files, the
 * skipped fetch, cat-file --batch-check for four lookups and one update-ref
 * transaction).
 */
async function refreshOne(name: string, checkout: string, opts: RefreshExportsOptions, isSecret: (p: string) => boolean): Promise<RepoState> {
  const log = opts.log.child({ repo: name });
  await opts.ready?.(name);
  if (!isAbsolute(checkout) || !existsSync(checkout)) {
    throw new RepoNotFoundError("operator checkout does not exist", { details: { repo: name } });
  }
  const exp = exportPath(opts.exportsDir, name);
  const st = await checkoutStatus(checkout, opts.secretPatterns);
  const same = await stampHolds(exp, st);
  const prevStamp = await readStamp(exp);
  if (same) {
    log.debug({ commit: same.working }, "export unchanged");
    return { name, servedCommit: same.working, worktreeCommit: "", dirty: false, dirtyFiles: [] };
  }
  const { head, branchRef } = st;
  const { gitDir, objectsDir } = await checkoutGitDirs(checkout);

  // Secrets first, before any object is hashed anywhere: tracked files (the
  // index, plus what HEAD has and the index dropped) and the untracked files
  // the snapshot would take.
  const listed = await gitList(["ls-files", "-z", "-t", "--cached", "--others", "--exclude-standard"], { cwd: checkout });
  // -t tags each path: "? " untracked, anything else is in the index.
  const tracked = [...listed.filter((l) => !l.startsWith("? ")).map((l) => l.slice(2)), ...st.stagedGone];
  const untracked = listed.filter((l) => l.startsWith("? ")).map((l) => l.slice(2));
  const trackedSecret = tracked.find(isSecret);
  if (trackedSecret) {
    throw new SecretInRepoError(`repo ${name} tracks a secret file: ${trackedSecret}`, { details: { repo: name, file: trackedSecret } });
  }
  const untrackedSecret = untracked.find(isSecret);
  if (untrackedSecret) {
    throw new SecretInRepoError(`repo ${name}: secret file ${untrackedSecret} is not ignored and would enter the _working snapshot`, {
      details: { repo: name, file: untrackedSecret },
    });
  }

  // A new export's HEAD names _working from the start (no symbolic-ref run).
  const created = await ensureBareRepo(exp, WORKING_REF);
  const ex = (args: string[], o: { allowFail?: boolean; env?: Record<string, string>; input?: string } = {}) => runGit(["--git-dir", exp, ...args], o);

  let fetched = false;
  if (head && branchRef.startsWith("refs/heads/") && (await exportRef(exp, branchRef)) !== head) {
    if (!prevStamp) await linkCheckoutPacks(objectsDir, exp, log);
    // A first export has nothing for git's auto-maintenance to find (its
    // objects came as linked packs): the check is one process fewer on a
    // cold nest's path. Later fetches keep it, so loose objects get packed.
    const fresh = prevStamp ? [] : ["--no-auto-maintenance"];
    await ex(["fetch", "-q", "--no-tags", "--no-write-fetch-head", ...fresh, checkout, `+${branchRef}:${branchRef}`]);
    fetched = true;
  }

  const { prev, working } = st.clean && head
    ? await cleanSnapshot(exp, head)
    : await snapshotCommit({ name, checkout, gitDir, objectsDir, exp, head, isSecret, ex });
  // An export this refresh created holds exactly what its one fetch wrote
  // (one branch, no tags): nothing to list for deletion.
  const refs = created
    ? (fetched ? [branchRef] : [])
    : (await ex(["for-each-ref", "--format=%(refname)", "refs/"])).stdout.toString().split("\n").filter(Boolean);
  const tx = [
    ...(working !== prev ? [`update ${WORKING_REF} ${working}`] : []),
    ...refs.filter((r) => r !== WORKING_REF && r !== branchRef).map((r) => `delete ${r}`),
  ];
  if (tx.length > 0) await ex(["update-ref", "--stdin"], { input: `${tx.join("\n")}\n` });
  if ((await readFile(join(exp, "HEAD"), "utf8").catch(() => "")).trim() !== `ref: ${WORKING_REF}`) await ex(["symbolic-ref", "HEAD", WORKING_REF]);
  await writeExportStamp(exp, { fingerprint: st.fingerprint, working, head, branchRef });
  log.debug({ commit: working, previous: prev || undefined }, "export refreshed");
  return {
    name, servedCommit: working, worktreeCommit: "", dirty: false, dirtyFiles: [],
    ...(prev && prev !== working ? { previousCommit: prev } : {}),
  };
}

/**
 * A clean checkout's snapshot is HEAD itself (what `add -A` and write-tree
 * would find is HEAD's tree): no throwaway index, no spawn. Only the last
 * snapshot is looked up, to know whether the ref moves.
 */
async function cleanSnapshot(exp: string, head: string): Promise<{ prev: string; working: string }> {
  return { prev: await exportRef(exp, WORKING_REF), working: head };
}

/**
 * The `_working` commit of a checkout with changes: its tree through a
 * throwaway index copied from the operator's (cached stat info keeps `add -A`
 * cheap); objects go to the export, with the checkout's objects as read-only
 * alternates, so the operator's repo is never written.
 */
async function snapshotCommit(o: {
  name: string; checkout: string; gitDir: string; objectsDir: string; exp: string; head: string;
  isSecret: (p: string) => boolean;
  ex: (args: string[], o?: { allowFail?: boolean; env?: Record<string, string>; input?: string }) => Promise<{ stdout: Buffer }>;
}): Promise<{ prev: string; working: string }> {
  const { name, checkout, gitDir, objectsDir, exp, head, isSecret, ex } = o;
  const tmp = await mkdtemp(join(tmpdir(), "hsd-snap-"));
  let tree: string;
  try {
    const index = join(tmp, "index");
    const env = {
      GIT_DIR: gitDir, GIT_WORK_TREE: checkout, GIT_INDEX_FILE: index,
      GIT_OBJECT_DIRECTORY: join(exp, "objects"), GIT_ALTERNATE_OBJECT_DIRECTORIES: objectsDir,
      GIT_OPTIONAL_LOCKS: "0",
    };
    if (existsSync(join(gitDir, "index"))) await copyFile(join(gitDir, "index"), index);
    else if (head) await runGit(["read-tree", head], { cwd: checkout, env });
    await runGit(["add", "-A", "--ignore-errors", "--", "."], { cwd: checkout, env });
    // The snapshot tree is final only now; recheck it against the patterns.
    const snapFiles = await gitList(["ls-files", "-z", "--cached"], { cwd: checkout, env });
    const late = snapFiles.find(isSecret);
    if (late) throw new SecretInRepoError(`repo ${name}: secret file ${late} would enter the _working snapshot`, { details: { repo: name, file: late } });
    tree = await gitText(["write-tree"], { cwd: checkout, env });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }

  // Four lookups, one process: the last snapshot, its tree and parent, HEAD's tree.
  const lookups = [WORKING_REF, `${WORKING_REF}^{tree}`, `${WORKING_REF}^1`, ...(head ? [`${head}^{tree}`] : [])];
  const found = (await ex(["cat-file", "--batch-check=%(objectname)"], { input: `${lookups.join("\n")}\n` })).stdout.toString("utf8").split("\n");
  const oidAt = (i: number) => (/^[0-9a-f]{40}$/.test(found[i] ?? "") ? found[i]! : "");
  const [prev, prevTree, prevParent, headTree] = [oidAt(0), oidAt(1), oidAt(2), head ? oidAt(3) : ""];
  let working: string;
  if (head && tree === headTree) {
    working = head; // clean checkout: the snapshot is the commit itself
  } else if (prev && prevTree === tree && prevParent === head) {
    working = prev; // unchanged since the last snapshot: move nothing
  } else {
    const args = ["commit-tree", tree, ...(head ? ["-p", head] : []), "-m", `hsd snapshot of uncommitted work in ${name}`];
    working = (await ex(args, { env: SNAPSHOT_IDENTITY })).stdout.toString().trim();
  }
  return { prev, working };
}

/**
 * Refreshes every export from its checkout. A repo that would leak a secret
 * is refused (nothing of it is exported); other repos are still refreshed,
 * then the first error is thrown with every failure in its details.
 */
export async function refreshExports(opts: RefreshExportsOptions): Promise<RepoState[]> {
  const isSecret = secretMatcher(opts.secretPatterns);
  const { queue, ready, seeded, ...rest } = opts;
  const dir = () => mkdir(opts.exportsDir, { recursive: true, mode: 0o700 });
  // Queued at once (nothing awaited before): a call joins whatever run is still waiting when it is made.
  const one = (n: string, p: string) => {
    // Decided by the run's own wait: a seeded export still ahead of its checkout is the run's answer.
    let seed: RepoState | undefined;
    const wait = async () => { seed = await seeded?.(n); if (!seed) await ready?.(n); };
    const job = async () => seed ?? (await dir(), refreshOne(n, p, rest, isSecret));
    return queue ? queue.run(n, wait, job) : wait().then(job);
  };
  return settleAll(Object.entries(opts.repos).map(([n, p]) => one(n, p)));
}

/**
 * What each export serves now (HEAD, normally `_working`); "" when a repo has
 * nothing yet. Read without a spawn: status, Identify and configure ask for
 * it on every level, and HEAD is always a branch of commits we wrote. Its
 * loose ref is read directly (two reads; isomorphic-git's resolveRef takes a
 * lock and tries packed-refs and every ref prefix), isomorphic-git only when
 * that cannot tell (packed-refs, a detached HEAD).
 */
export async function exportedRepoState(exportsDir: string, names: readonly string[]): Promise<RepoState[]> {
  return Promise.all(names.map(async (name) => {
    const exp = exportPath(exportsDir, name);
    const served = existsSync(join(exp, "HEAD")) ? (await headCommit(exp)) ?? await exportRef(exp, "HEAD") : "";
    return { name, servedCommit: served, worktreeCommit: "", dirty: false, dirtyFiles: [] };
  }));
}

/** A RepoResolver over the configured names: anything else (or absent on disk) is unknown. */
export function resolverFor(exportsDir: string, names: readonly string[]): (name: string) => string | undefined {
  const allowed = new Set(names);
  return (name) => {
    if (!allowed.has(name)) return undefined;
    const p = exportPath(exportsDir, name);
    return existsSync(join(p, "HEAD")) ? p : undefined;
  };
}
