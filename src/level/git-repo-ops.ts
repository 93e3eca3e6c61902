// RepoOps on real git: level 0 refreshes its bare exports from the operator's
// checkouts (with the _working snapshot); a level below fetches them from its
// parent over SSH git and checks out its working trees while it fetches the
// images its parent passed down (src/images) over the same connection. It also
// attests (live worktree commit and local edits) and compares a child's commit
// with this level's export (status). Level.ts only sees the RepoOps interface.
// Imported by: src/daemon.

import type { HsdConfig } from "../config/config.js";
import { levelPaths } from "../config/level-layout.js";
import type { Logger } from "../log/logger.js";
import type { RepoState, RepoSyncState } from "../domain/events.js";
import { exportPath, exportedRepoState, refreshExports } from "../git/export-repos.js";
import { runGit, worktreeGitEnv } from "../git/run-git.js";
import { ownTree, type TreeOwner } from "../homestak/tree-owner.js";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { prepareRepos, syncFromParent } from "../git/sync-from-parent.js";
import { readExportRefs } from "../git/export-refs.js";
import type { ExportRefs } from "../domain/level-api.js";
import { batchWorktreeStatus } from "../git/worktree-status.js";
import { SharedRunQueue } from "../util/shared-run-queue.js";
import { IndexRefresher } from "../git/index-refresh.js";
import { ParentConnection } from "../ssh/parent-connection.js";
import type { RepoOps, SyncProgress } from "./repo-ops.js";
import { beginImages, type ImagesAhead } from "./images-ahead.js";
import { homestakLayout } from "../homestak/layout.js";
import { describeImageProgress, fetchImages } from "../images/fetch-images.js";
import type { ImageDigests } from "../images/image-digest.js";
import type { FetchImageResult } from "../images/fetch-image.js";
import { parentOpenSshRoute } from "../images/openssh-transfer.js";
import { CancelledError, errorCode } from "../domain/errors.js";

export function gitRepoOps(o: {
  config: HsdConfig;
  repos: Readonly<Record<string, string>>;
  /** Per level-0 repo: settles when its checkout exists (demo repos are generated in the background); absent: now. */
  prepared?: Readonly<Record<string, Promise<void>>>;
  /** Per level-0 demo repo: its export written from the build's pack ahead of its checkout (LevelParts.repoSeeded). */
  seeded?: Readonly<Record<string, Promise<RepoState | undefined>>>;
  userKeyPath: string;
  /** Digests of this level's images (received ones are recorded, so a re-sync does not re-hash them). */
  digests?: ImageDigests;
  log: Logger;
  /** The OpenSSH client images move through (findOpenSsh); undefined: over the ssh2 connection. */
  sshPath?: string | undefined;
  /** homestak.user: gets the trees after every sync (hsd writes them as root). */
  owner?: TreeOwner;
}): RepoOps {
  const repoReady = (name: string) => o.prepared?.[name] ?? Promise.resolve();
  const allReady = () => Promise.all(Object.values(o.prepared ?? {}));
  // Repos whose checkout exists: the ones stateNow may read without waiting.
  const settled = new Set<string>();
  // Repos whose checkout is still being placed: a refresh of one with a seeded export answers with that export.
  const placing = new Set(Object.keys(o.prepared ?? {}));
  for (const [name, p] of Object.entries(o.prepared ?? {})) {
    p.then(() => settled.add(name), () => undefined).finally(() => placing.delete(name));
  }
  const seededAhead = async (name: string) => {
    const seed = await o.seeded?.[name];
    return seed && placing.has(name) ? seed : undefined;
  };
  const { config } = o;
  const paths = levelPaths(config.root);
  const names = config.parent ? config.repoNames : Object.keys(o.repos);
  const layout = homestakLayout(config, o.repos);
  let last: RepoState[] | undefined;
  // Level 0: each export refreshed one at a time, a waiting refresh shared (the start-up export and a nest's).
  const exportQueue = config.parent ? undefined : new SharedRunQueue<RepoState>();
  // A large checkout's racy index is refreshed after the sync, not by the next one's status.
  const refresher = config.parent ? new IndexRefresher(o.log) : undefined;
  // The repos' local set-up begun by warmParent before this process's first sync, which
  // consumes it. Never begun once a sync has started: two set-ups of one repo at once
  // could put a fresh HEAD over the one that sync wrote.
  let preparedAhead: Map<string, Promise<boolean>> | undefined;
  let syncStarted = false;
  // One SSH connection to the parent, kept across syncs (reconnects if it drops).
  const parentConn = config.parent
    ? new ParentConnection({ parent: config.parent, userKeyPath: o.userKeyPath, connectTimeoutMs: config.timeouts.connectMs, log: o.log })
    : undefined;

  // Attestation reads the working trees live (not what the last sync saw):
  // an edit made since must show as dirty in the next status.
  const read = async (which: readonly string[]): Promise<RepoState[]> => {
    // The exports and the working trees side by side: neither read waits for the other.
    const [served, trees] = await Promise.all([
      exportedRepoState(paths.reposDir, which), config.parent ? worktreeStates(which.map((n) => layout.worktree(n))) : undefined,
    ]);
    const byName = new Map((last ?? []).map((r) => [r.name, r]));
    return Promise.all(served.map(async (s, i) => {
      const wt = trees ? trees[i]! : await checkoutHead(o.repos[s.name]);
      const l = byName.get(s.name);
      return { ...s, ...wt, ...(l?.previousCommit ? { previousCommit: l.previousCommit } : {}), ...(l?.bytes ? { bytes: l.bytes } : {}) };
    }));
  };
  const merged = async (): Promise<RepoState[]> => { await allReady(); return read(names); };
  const now = (): Promise<RepoState[]> => read(names.filter((n) => !o.prepared?.[n] || settled.has(n)));

  const wantImages = o.digests !== undefined && parentConn !== undefined && Object.keys(config.images.entries).length > 0;
  // Every image's bytes can move without the ssh2 connection (fetch-image.ts: sha256, size and the parent's host key known).
  const imagesKnown = wantImages && !!o.sshPath && !!config.parent?.hostKey
    && Object.values(config.images.entries).every((e) => e.sha256 && e.size);
  const startImages = (onProgress: (p: SyncProgress) => void, signal: AbortSignal): Promise<Record<string, FetchImageResult>> => wantImages
    ? fetchImages({
      config, conn: parentConn!, digests: o.digests!, log: o.log, now: () => Date.now(), signal,
      openssh: parentOpenSshRoute({ sshPath: o.sshPath, conn: parentConn!, parent: config.parent!, userKeyPath: o.userKeyPath, connectTimeoutMs: config.timeouts.connectMs }),
      onProgress: (p) => onProgress({
        repo: `image:${p.image}`, phase: "image", loaded: p.done, total: p.total, unit: "bytes", message: describeImageProgress(p),
      }),
    })
    : Promise.resolve<Record<string, FetchImageResult>>({});
  // A first sync's images, begun by warmParent (the parent has authorized this level's key by then).
  let imagesAhead: ImagesAhead | undefined;
  return {
    async refresh(signal, onProgress, parentRefs, reposAfter) {
      if (!config.parent) {
        last = await refreshExports({
          repos: o.repos, exportsDir: paths.reposDir, secretPatterns: config.secretPatterns, log: o.log, ready: repoReady, queue: exportQueue,
          seeded: seededAhead,
        });
        return { repos: last, bytes: 0 };
      }
      // The images move beside the repos, not after them: their bytes ride their own
      // channel or OpenSSH process, so the image's probe, connect, transfer and hash
      // overlap the repos' fetches and checkouts instead of adding to them.
      // Ends the image transfer when the repos fail (its partial stays for the next sync's resume).
      const endImages = new AbortController();
      const early = imagesAhead;
      imagesAhead = undefined;
      const imagesSignal = AbortSignal.any([signal, endImages.signal]);
      const images = early?.join(onProgress, imagesSignal) ?? startImages(onProgress, imagesSignal);
      images.catch(() => undefined); // awaited below, on every path
      // A fresh PVE level's template waits on its image and its node's set-up, and nothing
      // waits on the repos until configure: they follow once the template's PVE work is under
      // way (and run beside it), so the image and the set-up have this level's CPU and link
      // first. Held at most until the images failed, or REPOS_HOLD_MS after they are in.
      if (reposAfter) await holdRepos(reposAfter, images, signal);
      const ahead = preparedAhead;
      preparedAhead = undefined;
      syncStarted = true;
      try {
        let r;
        try {
          r = await syncFromParent({
            parent: config.parent, userKeyPath: o.userKeyPath, repoNames: names, exportsDir: paths.reposDir, workDir: paths.workDir, worktreeOf: layout.worktree,
            connectTimeoutMs: config.timeouts.connectMs, commandTimeoutMs: config.timeouts.commandMs, log: o.log,
            onProgress, signal, connection: parentConn, refresher, ...(parentRefs ? { parentRefs } : {}),
            ...(ahead ? { prepared: ahead } : {}),
          });
        } catch (err) {
          // The repos' failure is the sync's outcome (with the states it got); nothing keeps writing after it.
          endImages.abort(new CancelledError("image transfer ended: the repos' sync failed"));
          await images.catch(() => undefined);
          throw err;
        }
        // The repos' states stand even when an image then fails.
        last = r.repos.map((x) => ({ ...x, bytes: r.bytesByRepo[x.name] ?? 0 }));
        let imageBytes = 0;
        for (const x of Object.values(await images)) imageBytes += x.bytes;
        if (o.owner) {
          const changed = await ownTree(layout.root, o.owner);
          o.log.debug({ owner: o.owner.name, changed }, "homestak trees handed to their owner");
        }
        return { repos: last, bytes: r.bytes + imageBytes };
      } catch (err) {
        const states = (err as { details?: { states?: RepoState[] } }).details?.states;
        if (states) last = states;
        throw err;
      }
    },
    async exportRefs() {
      const all = await Promise.all(names.map(async (n) => [n, await readExportRefs(exportPath(paths.reposDir, n))] as const));
      return Object.fromEntries(all.filter((e): e is readonly [string, ExportRefs] => e[1] !== undefined));
    },
    warmParent(reposAfter) {
      if (!config.parent) return undefined;
      // A first sync's images: a PVE level's template waits on them (src/level/images-ahead.ts).
      if (!syncStarted && wantImages) imagesAhead ??= beginImages(startImages);
      // The connect a sync would start (it finds the connection open) and a first sync's file
      // set-up (12 new repositories). When the images move without that connection (config
      // says all about them), these wait as long as the repos themselves do (`reposAfter`):
      // nothing needs them sooner, and they would take CPU from the image and the template.
      const first = !syncStarted;
      const rest = () => {
        parentConn?.connect().catch((err: unknown) => o.log.debug({ code: errorCode(err) }, "parent connection not opened ahead of a sync"));
        if (first && !syncStarted) preparedAhead ??= prepareRepos({ repoNames: names, exportsDir: paths.reposDir, workDir: paths.workDir, worktreeOf: layout.worktree });
      };
      if (reposAfter && imagesAhead && imagesKnown) void reposAfter.then(rest);
      else rest();
      return imagesAhead?.settled;
    },
    state: batched(merged),
    stateNow: batched(now),
    verify: merged,
    compare: (name, childCommit) => compareWithExport(exportPath(paths.reposDir, name), childCommit),
  };
}

const ENV = { GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1" };

/** How long a first sync's repos wait, once the images are in, for the template to be under way. */
export const REPOS_HOLD_MS = 10_000;

/** Settles when `after` does, when the images fail, REPOS_HOLD_MS after they are in, or on the signal. */
async function holdRepos(after: Promise<void>, images: Promise<unknown>, signal: AbortSignal): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let over = false;
  let onAbort: (() => void) | undefined;
  try {
    await Promise.race([
      after,
      // The bound starts once the images are in (never after the hold is over: no timer is left behind).
      images.then(() => new Promise<void>((r) => { if (!over) timer = setTimeout(r, REPOS_HOLD_MS); }), () => undefined),
      new Promise<void>((r) => {
        onAbort = () => r();
        if (signal.aborted) r(); else signal.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    over = true;
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Concurrent callers share reads: a call made while a read runs waits for it
 * and then shares the one next read with every other such call, so each
 * answer is read after its call arrived, and N concurrent Status calls cost
 * at most two reads (about a dozen git processes each), not N.
 */
function batched<T>(read: () => Promise<T>): () => Promise<T> {
  let current: Promise<T> | undefined;
  let next: Promise<T> | undefined;
  const run = (): Promise<T> => {
    if (!current) {
      const p = read().finally(() => { if (current === p) current = undefined; });
      current = p;
      return p;
    }
    next ??= current.then(() => undefined, () => undefined).then(() => { next = undefined; return run(); });
    return next;
  };
  return run;
}

/**
 * Where a child's served commit stands against this level's export. The
 * parent answers because it holds every object of its own history: a commit
 * it cannot find, or one that is not an ancestor of its own, is diverged.
 */
export async function compareWithExport(gitDir: string, childCommit: string): Promise<{ syncState: RepoSyncState; behind: number } | undefined> {
  const g = (args: string[]) => runGit(["--git-dir", gitDir, ...args], { env: ENV, allowFail: true });
  const mine = (await g(["rev-parse", "--verify", "-q", "HEAD^{commit}"])).stdout.toString().trim();
  if (!mine) return undefined; // nothing served here: nothing to compare against
  if (childCommit === mine) return { syncState: "in-sync", behind: 0 };
  if (childCommit === "") {
    // The child has nothing yet (never synced): behind by the whole history.
    const all = Number((await g(["rev-list", "--count", mine])).stdout.toString().trim());
    return { syncState: "behind", behind: Number.isFinite(all) ? all : 0 };
  }
  if (!/^[0-9a-f]{40}$/.test(childCommit)) return { syncState: "diverged", behind: 0 };
  // exit 0: ancestor; 1: not an ancestor; 128: the object is unknown here.
  if ((await g(["merge-base", "--is-ancestor", childCommit, mine])).code !== 0) return { syncState: "diverged", behind: 0 };
  const n = Number((await g(["rev-list", "--count", `${childCommit}..${mine}`])).stdout.toString().trim());
  return { syncState: "behind", behind: Number.isFinite(n) ? n : 0 };
}

type TreeState = Pick<RepoState, "worktreeCommit" | "dirty" | "dirtyFiles">;

/**
 * A level's working trees: each one's HEAD (detached, written by hsd) and
 * tracked files with local edits, the edits of all of them read by one
 * spawn (worktree-status.ts); tree by tree when that batch cannot be read.
 */
async function worktreeStates(worktrees: readonly string[]): Promise<TreeState[]> {
  const heads = await Promise.all(worktrees.map(async (w) => (await readFile(join(w, ".git", "HEAD"), "utf8").catch(() => "")).trim()));
  const live = worktrees.filter((_, i) => /^[0-9a-f]{40}$/.test(heads[i]!));
  const batch = live.length > 1 ? await batchWorktreeStatus(live) : undefined;
  return Promise.all(worktrees.map(async (w, i) => {
    const head = heads[i]!;
    if (!/^[0-9a-f]{40}$/.test(head)) return { worktreeCommit: "", dirty: false, dirtyFiles: [] };
    const dirtyFiles = batch ? batch[live.indexOf(w)]! : (await worktreeState(w, head)).dirtyFiles;
    return { worktreeCommit: head, dirty: dirtyFiles.length > 0, dirtyFiles };
  }));
}

/** One working tree at `head`: tracked files with local edits. */
async function worktreeState(worktree: string, head: string): Promise<TreeState> {
  // Untracked files (the level's own notes, build output) are not local edits
  // of synced code; only tracked-file changes block a checkout.
  const st = await runGit(["status", "--porcelain=v1", "-z", "--untracked-files=no", "--no-renames"], {
    // A status read between syncs must not rewrite the index as root (its opportunistic refresh) in a tree another user owns.
    cwd: worktree, env: { ...worktreeGitEnv(worktree), GIT_OPTIONAL_LOCKS: "0" }, allowFail: true,
  });
  const dirtyFiles = st.code === 0 ? st.stdout.toString("utf8").split("\0").filter(Boolean).map((rec) => rec.slice(3)) : [];
  return { worktreeCommit: head, dirty: dirtyFiles.length > 0, dirtyFiles };
}

/** Level 0's "working tree" is the operator's checkout: its HEAD (edits there are exported, not held). */
async function checkoutHead(checkout: string | undefined): Promise<Pick<RepoState, "worktreeCommit">> {
  if (!checkout) return { worktreeCommit: "" };
  const r = await runGit(["rev-parse", "--verify", "-q", "HEAD^{commit}"], { cwd: checkout, env: ENV, allowFail: true });
  return { worktreeCommit: r.stdout.toString().trim() };
}
