// The exported repo set at level 0: one bare repo per name, refreshed from the
// operator's working checkout (its HEAD branch plus a `_working` snapshot of
// uncommitted, non-ignored changes) without touching the operator's index,
// working tree or object store. Also reports what any level serves. Imported
// by the daemon wiring (level 0 refresh, status), sync code, tests, benches.

import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, copyFile } from "node:fs/promises";
import { basename, isAbsolute, join, resolve } from "node:path";
import { tmpdir } from "node:os";
import type { Logger } from "../log/logger.js";
import type { RepoState } from "../nest/events.js";
import { SecretInRepoError, RepoNotFoundError } from "../errors/hs-error.js";
import { runGit, gitText, gitList } from "./run-git.js";

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

/** A bare repo with no user/system config influence (we own it). */
export async function ensureBareRepo(path: string): Promise<void> {
  if (existsSync(join(path, "HEAD"))) return;
  await mkdir(path, { recursive: true });
  await runGit(["init", "-q", "--bare", path], { env: { GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1" } });
}

async function refreshOne(name: string, checkout: string, opts: RefreshExportsOptions, isSecret: (p: string) => boolean): Promise<RepoState> {
  const log = opts.log.child({ repo: name });
  if (!isAbsolute(checkout) || !existsSync(checkout)) {
    throw new RepoNotFoundError("operator checkout does not exist", { details: { repo: name } });
  }
  const gitDir = resolve(checkout, await gitText(["rev-parse", "--git-dir"], { cwd: checkout }));
  const objectsDir = resolve(checkout, await gitText(["rev-parse", "--git-path", "objects"], { cwd: checkout }));
  const head = (await runGit(["rev-parse", "--verify", "-q", "HEAD^{commit}"], { cwd: checkout, allowFail: true })).stdout.toString().trim();
  const branchRef = (await runGit(["symbolic-ref", "-q", "HEAD"], { cwd: checkout, allowFail: true })).stdout.toString().trim();

  // Secrets first, before any object is hashed anywhere: tracked files
  // (index and HEAD) and the untracked files the snapshot would take.
  const tracked = await gitList(["ls-files", "-z", "--cached"], { cwd: checkout });
  const inHead = head ? await gitList(["ls-tree", "-r", "-z", "--name-only", head], { cwd: checkout }) : [];
  const untracked = await gitList(["ls-files", "-z", "--others", "--exclude-standard"], { cwd: checkout });
  const trackedSecret = [...inHead, ...tracked].find(isSecret);
  if (trackedSecret) {
    throw new SecretInRepoError(`repo ${name} tracks a secret file: ${trackedSecret}`, { details: { repo: name, file: trackedSecret } });
  }
  const untrackedSecret = untracked.find(isSecret);
  if (untrackedSecret) {
    throw new SecretInRepoError(`repo ${name}: secret file ${untrackedSecret} is not ignored and would enter the _working snapshot`, {
      details: { repo: name, file: untrackedSecret },
    });
  }

  const exp = exportPath(opts.exportsDir, name);
  await ensureBareRepo(exp);
  const ex = (args: string[], o: { allowFail?: boolean; env?: Record<string, string> } = {}) => runGit(["--git-dir", exp, ...args], o);

  if (head && branchRef.startsWith("refs/heads/")) {
    await ex(["fetch", "-q", "--no-tags", "--no-write-fetch-head", checkout, `+${branchRef}:${branchRef}`]);
  }

  // Snapshot through a throwaway index copied from the operator's (cached stat
  // info keeps `add -A` cheap); objects go to the export, with the checkout's
  // objects as read-only alternates, so the operator's repo is never written.
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

  const prev = (await ex(["rev-parse", "--verify", "-q", `${WORKING_REF}^{commit}`], { allowFail: true })).stdout.toString().trim();
  let working: string;
  const headTree = head ? await gitText(["--git-dir", exp, "rev-parse", `${head}^{tree}`]) : "";
  if (head && tree === headTree) {
    working = head; // clean checkout: the snapshot is the commit itself
  } else {
    const prevTree = prev ? await gitText(["--git-dir", exp, "rev-parse", `${prev}^{tree}`]) : "";
    const prevParent = prev ? (await ex(["rev-parse", "--verify", "-q", `${prev}^1`], { allowFail: true })).stdout.toString().trim() : "";
    if (prev && prevTree === tree && prevParent === head) {
      working = prev; // unchanged since the last snapshot: move nothing
    } else {
      const args = ["commit-tree", tree, ...(head ? ["-p", head] : []), "-m", `hsd snapshot of uncommitted work in ${name}`];
      working = (await ex(args, { env: SNAPSHOT_IDENTITY })).stdout.toString().trim();
    }
  }
  if (working !== prev) await ex(["update-ref", WORKING_REF, working]);
  await ex(["symbolic-ref", "HEAD", WORKING_REF]);
  // The export holds exactly the operator's current branch and the snapshot.
  const heads = (await ex(["for-each-ref", "--format=%(refname)", "refs/"])).stdout.toString().split("\n").filter(Boolean);
  for (const r of heads) {
    if (r !== WORKING_REF && r !== branchRef) await ex(["update-ref", "-d", r]);
  }
  log.debug({ commit: working, previous: prev || undefined }, "export refreshed");
  return {
    name, servedCommit: working, worktreeCommit: "", dirty: false, dirtyFiles: [],
    ...(prev && prev !== working ? { previousCommit: prev } : {}),
  };
}

/**
 * Refreshes every export from its checkout. A repo that would leak a secret
 * is refused (nothing of it is exported); other repos are still refreshed,
 * then the first error is thrown with every failure in its details.
 */
export async function refreshExports(opts: RefreshExportsOptions): Promise<RepoState[]> {
  await mkdir(opts.exportsDir, { recursive: true, mode: 0o700 });
  const isSecret = secretMatcher(opts.secretPatterns);
  const results = await Promise.allSettled(Object.entries(opts.repos).map(([n, p]) => refreshOne(n, p, opts, isSecret)));
  const failures = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
  if (failures.length > 0) throw failures[0];
  return results.map((r) => (r as PromiseFulfilledResult<RepoState>).value);
}

/** What each export serves now (HEAD, normally `_working`); "" when a repo has nothing yet. */
export async function exportedRepoState(exportsDir: string, names: readonly string[]): Promise<RepoState[]> {
  return Promise.all(names.map(async (name) => {
    const exp = exportPath(exportsDir, name);
    let served = "";
    if (existsSync(join(exp, "HEAD"))) {
      served = (await runGit(["--git-dir", exp, "rev-parse", "--verify", "-q", "HEAD^{commit}"], { allowFail: true })).stdout.toString().trim();
    }
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
