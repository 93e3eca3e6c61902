// A level below 0 fetches its repo set from its parent over SSH into the
// level's bare exports (re-exported unchanged to its own children): one round
// trip per repo (fetch-pack.ts; isomorphic-git's fetch where that cannot
// serve), a large pack indexed by git index-pack (divert-pack.ts), then each
// working tree moved to the fetched HEAD. A repo whose export already
// holds what the parent said it serves (sent with its sync request) is not
// fetched at all; its working tree is only checked for local edits.
// Imported by: src/level.

import * as fs from "node:fs";
import git, { type GitProgressEvent } from "isomorphic-git";
import type { Logger } from "../log/logger.js";
import type { RepoState } from "../domain/events.js";
import type { ParentRefs } from "../domain/level-api.js";
import { DirtyWorktreeError, HsError, GitProtocolError } from "../domain/errors.js";
import { ParentConnection, type ParentEndpoint } from "../ssh/parent-connection.js";
import { FetchSession, sshRemoteUrl } from "./ssh-http-plugin.js";
import type { RefAdvertisement } from "./pkt-line.js";
import { ensureBareRepo, exportPath } from "./export-repos.js";
import { checkoutWorktree, isFreshWorktree, prepareWorktree } from "./worktree-checkout.js";
import { deleteLooseRef, headCommit, looseRefs, symbolicHead, writeLooseRef } from "./loose-refs.js";
import { advertisedExportRefs, readExportRefs, refsUnder, sameExportRefs } from "./export-refs.js";
import { batchWorktreeStatus } from "./worktree-status.js";
import { FETCH_REMOTE, canFetchPack, fetchPack, readLocalRefs, servedRefs, type LocalRefs } from "./fetch-pack.js";
import { IndexPack, type PendingReadTree } from "./divert-pack.js";
import { WorkPool } from "../util/work-pool.js";
import { settleAll } from "../util/settle-all.js";
import type { IndexRefresher } from "./index-refresh.js";
import { join } from "node:path";

export interface SyncFromParentOptions {
  parent: ParentEndpoint;
  userKeyPath: string;
  repoNames: readonly string[];
  /** levelPaths(root).reposDir */
  exportsDir: string;
  /** levelPaths(root).workDir: trees at <workDir>/<name> unless worktreeOf says otherwise. */
  workDir: string;
  /** Where each repo's working tree goes (the level's homestak layout). */
  worktreeOf?: (name: string) => string;
  connectTimeoutMs: number;
  /** Budget for each repo's fetch. */
  commandTimeoutMs: number;
  log: Logger;
  onProgress?: (ev: { repo: string; phase: string; loaded: number; total: number }) => void;
  signal?: AbortSignal;
  /** Reuse a connection across syncs (else one is opened and closed here). */
  connection?: ParentConnection;
  /** Repos fetched at once over the one connection. */
  concurrency?: number;
  /** Smallest pack indexed by `git index-pack` rather than isomorphic-git (divert-pack.ts); Infinity = never (benches compare). */
  divertMinObjects?: number;
  /** Refreshes a large checkout's index after the fact (index-refresh.ts); absent: the next status re-hashes instead. */
  refresher?: IndexRefresher;
  /**
   * What the parent serves, as it said when it asked for this sync. A repo
   * whose export already holds exactly that is not asked for (no channel and
   * no upload-pack on the parent: five of six in a one-commit wave); a repo
   * missing here, or different, is fetched as usual.
   */
  parentRefs?: ParentRefs;
  /**
   * Each repo's local set-up (prepareRepos), begun ahead of this sync; a
   * repo missing here is set up by the sync itself. Consumed by this sync only.
   */
  prepared?: ReadonlyMap<string, Promise<boolean>>;
}

export interface SyncResult { repos: RepoState[]; bytes: number; bytesByRepo: Record<string, number> }

const REMOTE = FETCH_REMOTE;

/**
 * What a repo's fetch and checkout need on disk, made before the connection
 * is up: the export and the working tree's repo, side by side (neither reads
 * the other). Local file work that would otherwise sit between the parent's
 * answers on this level's one event loop. True when the export is new (it
 * serves nothing yet).
 */
async function prepareRepo(name: string, opts: Pick<SyncFromParentOptions, "exportsDir" | "workDir" | "worktreeOf">): Promise<boolean> {
  const gitdir = exportPath(opts.exportsDir, name);
  // Both settle before a failure is reported: nothing keeps writing after the sync has failed.
  const [created] = await settleAll([ensureBareRepo(gitdir), prepareWorktree(worktreeOf(name, opts), gitdir)]);
  return created;
}

/** isomorphic-git's fetch needs the remote it fetches from, with a fetch refspec; the parent's address may change between runs. */
async function pointRemote(gitdir: string, url: string): Promise<void> {
  if ((await git.getConfig({ fs, gitdir, path: `remote.${REMOTE}.url` })) === url) return;
  await git.setConfig({ fs, gitdir, path: `remote.${REMOTE}.url`, value: url });
  await git.setConfig({ fs, gitdir, path: `remote.${REMOTE}.fetch`, value: `+refs/heads/*:refs/remotes/${REMOTE}/*` });
}

/**
 * Every repo's local set-up (prepareRepo), begun now, side by side: a level
 * begins it before its first sync is asked for (while its parent's handshake
 * runs), as that sync would otherwise begin with ~100 ms of file creation on
 * its critical path. Each promise says whether its export is new; none rejects
 * unseen (the sync that consumes them reports a failure).
 */
export function prepareRepos(opts: Pick<SyncFromParentOptions, "repoNames" | "exportsDir" | "workDir" | "worktreeOf">): Map<string, Promise<boolean>> {
  return new Map(opts.repoNames.map((name) => {
    const p = prepareRepo(name, opts);
    p.catch(() => {}); // awaited by the sync that consumes it
    return [name, p];
  }));
}

function worktreeOf(name: string, opts: Pick<SyncFromParentOptions, "workDir" | "worktreeOf">): string {
  return opts.worktreeOf ? opts.worktreeOf(name) : join(opts.workDir, name);
}

interface Fetched { head: string; bytes: number; readTree?: PendingReadTree }

/**
 * Fetches one repo into its export (prepareRepo made it) and makes the
 * export's heads/HEAD mirror the parent's. A new level's empty working tree
 * may come back with its checkout pending in the pack's index-pack process
 * (readTree: the caller runs or releases it); a failed fetch releases it.
 */
async function fetchInto(name: string, opts: SyncFromParentOptions, conn: ParentConnection, firstFetch: boolean, onChannelAsked: () => void): Promise<Fetched> {
  const gitdir = exportPath(opts.exportsDir, name);
  const worktree = worktreeOf(name, opts);
  const checkoutInto = (await isFreshWorktree(worktree)) ? worktree : undefined;
  // A first fetch's pack is the repo's whole history: its index-pack is started now, while the
  // parent opens the channel and answers, not between pack packets (a fork blocks this event loop).
  const indexPack = firstFetch && opts.divertMinObjects !== Infinity ? new IndexPack(gitdir, checkoutInto) : undefined;
  const session = new FetchSession({
    conn, commandTimeoutMs: opts.commandTimeoutMs, log: opts.log, signal: opts.signal, onChannelAsked,
    indexPackInto: gitdir, divertMinObjects: opts.divertMinObjects,
    ...(checkoutInto ? { checkoutInto } : {}), ...(indexPack ? { indexPack } : {}),
    onProgress: (ev: GitProgressEvent) => opts.onProgress?.({ repo: name, phase: ev.phase, loaded: ev.loaded, total: ev.total }),
  });
  try {
    const f = await fetchWith(session, name, gitdir, opts);
    return session.pack.readTree ? { ...f, readTree: session.pack.readTree } : f;
  } catch (err) {
    session.pack.readTree?.release();
    throw err;
  } finally {
    // No pack reached it (nothing to fetch, or the fetch failed before one): stop it, leaving nothing behind.
    if (indexPack && !indexPack.done) await indexPack.abort();
  }
}

async function fetchWith(session: FetchSession, name: string, gitdir: string, opts: SyncFromParentOptions): Promise<{ head: string; bytes: number }> {
  const cache = {};
  const url = sshRemoteUrl(opts.parent.host, opts.parent.port, name);
  // The export's refs (none yet on a first fetch) are read while the parent answers.
  const localRead = readLocalRefs(gitdir).catch(() => undefined);
  let res;
  let before: Map<string, string> | undefined;
  try {
    // Nothing new (same heads, tags and HEAD as last time)? Then skip the
    // negotiation and the pack entirely, as the git CLI does.
    const ad = await session.advertisement(name);
    const local = await localRead;
    if (await upToDate(gitdir, ad, local)) {
      await session.nothingWanted();
      return { head: await servedCommit(gitdir), bytes: session.bytes };
    }
    // One round trip from the refs both sides already hold (fetch-pack.ts); an export with packed refs,
    // or a parent without a HEAD branch or the capabilities it needs, takes isomorphic-git's fetch.
    if (local && canFetchPack(ad)) {
      const { head } = await fetchPack({ session, url, gitdir, ad, local, repo: name });
      return { head, bytes: session.bytes };
    }
    await pointRemote(gitdir, url);
    before = await fetchedRefs(gitdir);
    res = await git.fetch({
      fs, http: session.http, gitdir, cache,
      url,
      remote: REMOTE, remoteRef: "HEAD", singleBranch: false, tags: true, prune: true, pruneTags: true,
      onProgress: (ev) => opts.onProgress?.({ repo: name, phase: ev.phase, loaded: ev.loaded, total: ev.total ?? 0 }),
    });
  } catch (err) {
    if (before) await restoreRefs(gitdir, before);
    throw session.error ?? (err instanceof HsError ? err : new GitProtocolError(`fetch of ${name} failed: ${(err as Error).message}`, {
      details: { repo: name }, cause: err,
    }));
  } finally {
    await session.close();
  }
  if (session.error) {
    if (before) await restoreRefs(gitdir, before);
    throw session.error;
  }
  await mirrorHeads(gitdir, res.defaultBranch);
  const head = res.fetchHead ?? (await git.resolveRef({ fs, gitdir, ref: "HEAD" }));
  return { head, bytes: session.bytes };
}

/** The commit the export serves as HEAD ("" when none yet). */
async function servedCommit(gitdir: string): Promise<string> {
  return (await headCommit(gitdir)) ?? (await git.resolveRef({ fs, gitdir, ref: "HEAD" }).catch(() => ""));
}

/** The refs a fetch writes: remote-tracking branches and tags, by name. */
function fetchedRefs(gitdir: string): Promise<Map<string, string>> {
  return refsUnder(gitdir, [`refs/remotes/${REMOTE}/`, "refs/tags/"]);
}

/**
 * Mirrors the parent's branches (the remote-tracking refs the fetch wrote)
 * as this export's own heads, so children see the same refs, and points
 * HEAD where the parent's does.
 */
async function mirrorHeads(gitdir: string, defaultBranch: string | null | undefined): Promise<void> {
  const remotePrefix = `refs/remotes/${REMOTE}/`;
  const wanted = new Map([...await refsUnder(gitdir, [remotePrefix])].map(([ref, oid]) => [`refs/heads/${ref.slice(remotePrefix.length)}`, oid]));
  const have = await refsUnder(gitdir, ["refs/heads/"]);
  const packed = (await looseRefs(gitdir, "refs/heads/")) === null;
  // Deletions first: a branch "a" gone and "a/b" new need the file out of the directory's way.
  for (const ref of have.keys()) {
    if (!wanted.has(ref)) await (packed ? git.deleteRef({ fs, gitdir, ref }) : deleteLooseRef(gitdir, ref));
  }
  for (const [ref, oid] of wanted) {
    if (have.get(ref) === oid) continue;
    await (packed ? git.writeRef({ fs, gitdir, ref, value: oid, force: true }) : writeLooseRef(gitdir, ref, oid));
  }
  if (defaultBranch && (await symbolicHead(gitdir)) !== defaultBranch) await writeLooseRef(gitdir, "HEAD", `ref: ${defaultBranch}`);
}

/**
 * Puts the fetched refs back as they were. isomorphic-git writes the new
 * remote-tracking refs and tags as soon as the server has answered, before
 * the pack arrives, so a fetch that fails mid-pack (timeout, cut link) would
 * otherwise leave refs naming objects that never came, which upload-pack
 * would then advertise to this level's children.
 */
async function restoreRefs(gitdir: string, before: ReadonlyMap<string, string>): Promise<void> {
  const now = await fetchedRefs(gitdir).catch(() => new Map<string, string>());
  for (const [ref, oid] of now) {
    const old = before.get(ref);
    if (old === undefined) await git.deleteRef({ fs, gitdir, ref }).catch(() => {});
    else if (old !== oid) await git.writeRef({ fs, gitdir, ref, value: old, force: true });
  }
  for (const [ref, old] of before) if (!now.has(ref)) await git.writeRef({ fs, gitdir, ref, value: old, force: true });
}

/** True when the export already holds exactly the advertised heads, tags and HEAD target (its refs read already, or read now). */
async function upToDate(gitdir: string, ad: RefAdvertisement, local: LocalRefs | undefined): Promise<boolean> {
  const remote = advertisedExportRefs(ad);
  if (remote === undefined) return false;
  return sameExportRefs(local ? servedRefs(local) : await readExportRefs(gitdir), remote);
}

/**
 * The commit this level's export of `name` serves when it holds exactly what
 * the parent said it serves (then nothing is fetched); else undefined.
 */
async function heldAsTold(name: string, opts: SyncFromParentOptions, newExport: Promise<boolean>): Promise<string | undefined> {
  const told = opts.parentRefs?.[name];
  if (!told || (await newExport.catch(() => true))) return undefined;
  // Equal refs: the commit HEAD's branch names is the one told, no second read of HEAD.
  return sameExportRefs(await readExportRefs(exportPath(opts.exportsDir, name)), told) ? told.refs[told.head] : undefined;
}

/** A working tree's local edits, read while it was at commit `at`. */
interface TreeStatus { at: string; dirtyFiles: string[] }

/**
 * The local edits of every repo's working tree, by one `git status` per tree
 * run from a single spawn (a fork of this daemon each would delay the fetch's
 * channel): an unfetched repo's tree if it is at its served commit, a fetched
 * repo's wherever it is (its checkout then needs no status of its own). A
 * tree elsewhere or not yet checked out, or a batch that could not be read,
 * is left out: its repo reads its own status when it moves.
 */
async function treeStatuses(repos: readonly { name: string; commit?: string }[], opts: SyncFromParentOptions): Promise<Map<string, TreeStatus>> {
  const at = (await Promise.all(repos.map(async (r) => {
    const worktree = worktreeOf(r.name, opts);
    const head = (await fs.promises.readFile(join(worktree, ".git", "HEAD"), "utf8").catch(() => "")).trim();
    return (r.commit ? head === r.commit : /^[0-9a-f]{40}$/.test(head)) ? [{ name: r.name, worktree, head }] : [];
  }))).flat();
  await Promise.all(at.map((t) => opts.refresher?.settle(t.worktree)));
  // Each index refreshed as it is read: a tree that moves next is read-tree's, which trusts the index's stat data.
  const files = await batchWorktreeStatus(at.map((t) => t.worktree), { refreshIndex: true });
  return new Map(files ? at.map((t, i) => [t.name, { at: t.head, dirtyFiles: files[i]! }]) : []);
}

/** Resolves (on a later turn of the loop) once every one of `count` callers has called its `done`; each may call it more than once. */
function allAsked(count: number): { asked: Promise<void>; done: () => () => void } {
  let left = count;
  let resolve!: () => void;
  const asked = new Promise<void>((r) => { resolve = r; });
  if (left === 0) resolve();
  return {
    asked,
    done: () => {
      let called = false;
      return () => {
        if (called) return;
        called = true;
        if (--left === 0) setImmediate(resolve);
      };
    },
  };
}

/**
 * Syncs every repo. Repos that fail to fetch fail the sync (first error
 * thrown, after the others finished). A worktree with local edits or with
 * untracked files in the way is left alone: its RepoState says so and a
 * DirtyWorktreeError naming the repos and files is thrown at the end.
 */
export async function syncFromParent(opts: SyncFromParentOptions): Promise<SyncResult> {
  const conn = opts.connection ?? new ParentConnection({
    parent: opts.parent, userKeyPath: opts.userKeyPath, connectTimeoutMs: opts.connectTimeoutMs, log: opts.log,
  });
  try {
    // Each repo's local set-up runs while the SSH handshake is under way, unless it was begun before.
    const ahead = opts.prepared;
    const rest = prepareRepos({ ...opts, repoNames: opts.repoNames.filter((n) => !ahead?.has(n)) });
    const prepared = new Map(opts.repoNames.map((name) => [name, ahead?.get(name) ?? rest.get(name)!]));
    try {
      await conn.connect(opts.signal);
    } catch (err) {
      await Promise.allSettled(prepared.values()); // nothing keeps writing after the sync has failed
      throw err;
    }
    // The repos this level holds as the parent said it serves them (file reads only): no fetch,
    // and their working trees are checked by one spawn beside the other repos' fetches.
    const asTold = new Map(await Promise.all(opts.repoNames.map(async (name) => [name, await heldAsTold(name, opts, prepared.get(name)!)] as const)));
    // The repos to fetch are queued first, and the one status spawn waits until those that got
    // a slot at once have asked the parent for their channels: its fork blocks this loop.
    const concurrency = opts.concurrency ?? 6;
    const toFetch = opts.repoNames.filter((n) => !asTold.get(n));
    const order = [...toFetch, ...opts.repoNames.filter((n) => asTold.get(n))];
    const channels = allAsked(Math.min(concurrency, toFetch.length));
    // Unreadable as a batch: each such repo checks its tree as any other does.
    const statuses = channels.asked.then(() => treeStatuses(opts.repoNames.map((name) => ({ name, ...(asTold.get(name) ? { commit: asTold.get(name)! } : {}) })), opts))
      .catch(() => new Map<string, TreeStatus>());
    const pool = new WorkPool(concurrency);
    const tasks = new Map(order.map((name, i) => [name, pool.run(async () => {
      const t0 = performance.now();
      const kept = asTold.get(name);
      const quiet = kept ? (await statuses).get(name) : undefined;
      if (kept && quiet) {
        const state: RepoState = { name, servedCommit: kept, worktreeCommit: kept, dirty: quiet.dirtyFiles.length > 0, dirtyFiles: quiet.dirtyFiles };
        return { state, bytes: 0, held: false };
      }
      const asked = !kept && i < concurrency ? channels.done() : () => {};
      let f: Fetched;
      let previousServed: string;
      try {
        // A new export serves nothing: no need to read it.
        previousServed = kept ?? ((await prepared.get(name)) ? "" : await servedCommit(exportPath(opts.exportsDir, name)));
        f = kept ? { head: kept, bytes: 0 } : await fetchInto(name, opts, conn, previousServed === "", asked);
      } finally {
        asked();
      }
      const t1 = performance.now();
      const worktree = worktreeOf(name, opts);
      let wt;
      try {
        await opts.refresher?.settle(worktree);
        const status = (await statuses).get(name);
        wt = await checkoutWorktree({
          worktree, exportGitDir: exportPath(opts.exportsDir, name), commit: f.head,
          log: opts.log.child({ repo: name }), ...(f.readTree ? { pendingReadTree: f.readTree } : {}), ...(status ? { status } : {}),
        });
      } finally {
        f.readTree?.release();
      }
      if (!wt.held && wt.commit !== wt.previous) await opts.refresher?.afterCheckout(worktree, f.bytes);
      opts.log.debug({ repo: name, fetchMs: Math.round(t1 - t0), checkoutMs: Math.round(performance.now() - t1), bytes: f.bytes }, "repo synced");
      const state: RepoState = {
        name, servedCommit: f.head, worktreeCommit: wt.commit, dirty: wt.dirty || wt.held,
        dirtyFiles: [...wt.dirtyFiles, ...wt.blockedBy],
        ...(previousServed && previousServed !== f.head ? { previousCommit: previousServed } : {}),
      };
      return { state, bytes: f.bytes, held: wt.held };
    })]));
    const results = await Promise.allSettled(opts.repoNames.map((name) => tasks.get(name)!));
    const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
    const ok = results.map((r) => (r as PromiseFulfilledResult<{ state: RepoState; bytes: number; held: boolean }>).value);
    const bytesByRepo = Object.fromEntries(ok.map((r) => [r.state.name, r.bytes]));
    const bytes = ok.reduce((n, r) => n + r.bytes, 0);
    const held = ok.filter((r) => r.held);
    if (held.length > 0) {
      throw new DirtyWorktreeError(
        `working tree not updated (local changes or untracked files in the way): ${held.map((h) => `${h.state.name} [${h.state.dirtyFiles.slice(0, 5).join(", ")}]`).join("; ")}`,
        { details: { repos: held.map((h) => ({ name: h.state.name, files: h.state.dirtyFiles })), states: ok.map((r) => r.state), bytes } },
      );
    }
    opts.log.info({ bytes, repos: ok.length }, "sync from parent finished");
    return { repos: ok.map((r) => r.state), bytes, bytesByRepo };
  } finally {
    if (!opts.connection) conn.close();
  }
}
