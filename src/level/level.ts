// The daemon's LevelApi: what this level does when hsctl or its parent asks. It
// composes the nest engine, the repo operations, the secrets store and the
// child links; the gRPC handlers in src/api call it.
// Imported by: src/daemon, src/level.

import type { HsdConfig } from "../config/config.js";
import { errorCode } from "../domain/errors.js";
import type { Logger } from "../log/logger.js";
import type { ChildLinks } from "../nest/child-link.js";
import type { CheckResult } from "../domain/checks.js";
import { relayUnder, type EventSink, type LevelEvent, type LocalEvent, type RepoState, type RepoSyncState } from "../domain/events.js";
import type { DestroyOptions, Identity, LevelApi, LevelPath, LevelStatus, LogLine, LogsOptions, NestOptions, ParentRefs, SyncOptions } from "../domain/level-api.js";
import type { ChildRecord, Journal } from "../nest/journal.js";
import { type Clock, type NestEngine } from "../nest/nest-engine.js";
import { ALL_AT_ONCE, valuesOrFirstFailure, type ChildTree } from "../nest/child-tree.js";
import { toFailure } from "../domain/failure.js";
import type { SecretsStore } from "../secrets/secrets-store.js";
import { decodeLevelFiles, type SiteConfigFiles } from "../homestak/site-config.js";
import { LevelConfigure, type ConfigureDeps } from "./level-configure.js";
import { withTimeout } from "../util/timeout.js";
import { DirtyWorktreeError, HsError, InvalidArgumentError, PeerGoneError, PhaseTimeoutError } from "../domain/errors.js";
import { attestChild, childStatusFromRecord, describeChanges } from "./level-status.js";
import { progressThrottle } from "../util/progress-throttle.js";
import type { DoctorOptions } from "../domain/level-api.js";
import type { ChildLink } from "../nest/child-link.js";
import type { RingLine } from "../log/log-ring.js";
import { redactValues, secretValues } from "./redact-values.js";
import { routeLevel } from "./level-route.js";
import { syncChild } from "./sync-child.js";
import { refreshAfterProvision } from "./refresh-after-provision.js";
import type { RepoOps, SyncProgress } from "./repo-ops.js";

export type { RepoOps, SyncProgress } from "./repo-ops.js";

/**
 * Sync progress per repo and git phase goes up the tree at most this often:
 * every event is relayed by each level above, and git counts single objects.
 * A git phase that ends within one interval sends only its final report (a
 * small repo's sync: ~30 events a level instead of ~55).
 */
const PROGRESS_INTERVAL_MS = 100;

const ready = (): Promise<void> => Promise.resolve();

/** A named point in a handler the wiring may hook (src/daemon/checkpoints.ts: where tests hold a level). */
export type Checkpoint = (point: string, announce: (message: string) => void, signal: AbortSignal) => Promise<void>;

export interface LevelDeps extends ConfigureDeps {
  readonly config: HsdConfig;
  readonly log: Logger;
  readonly version: string;
  readonly clock: Clock;
  readonly engine: NestEngine;
  readonly journal: Journal;
  readonly links: ChildLinks;
  readonly secrets: SecretsStore;
  readonly repos: RepoOps;
  readonly identity: () => { publicKey: string; hostKeyFingerprint: string; sshAddress: string };
  /** Called after a Destroy{self:true} stream has finished. */
  readonly requestShutdown: () => void;
  /**
   * Called at the start of each handler (and of a sync) with the point's name;
   * the daemon's wiring passes its checkpoints here when a test listens.
   */
  readonly checkpoint?: Checkpoint;
  /** This level's config/site.yaml and config/secrets.yaml (written when the parent delivers them). */
  readonly siteConfig?: SiteConfigFiles;
  /** This hsd's recent log lines (src/log/log-ring.ts); absent = no lines to serve. */
  readonly logLines?: { read(opts: { sinceMs?: number; follow: boolean }, signal: AbortSignal): AsyncIterable<RingLine & { dropped: number }> };
}

export class Level implements LevelApi {
  constructor(private readonly d: LevelDeps) {
    this.configuring = new LevelConfigure(d, (sink, ev) => this.emit(sink, ev));
  }

  private get name(): string {
    return this.d.config.level.name;
  }

  async nest(opts: NestOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
    await this.fault("nest", sink, "nest", signal);
    if (this.d.config.parent) return this.d.engine.nest(opts, sink, signal);
    // Level 0 exports what the operator is editing right now, so that is what
    // every level runs (a first refresh writes every pack): refresh-after-provision.ts.
    const r = refreshAfterProvision(() => this.sync({ recursive: false }, sink, signal), sink);
    this.refreshing = r.start;
    const built = this.d.engine.nest(opts, r.sink, signal);
    // Both settle before the outcome; the refresh's failure comes first, as the exports are what every level runs.
    try {
      await built.finally(() => r.begun());
    } finally {
      if (this.refreshing === r.start) this.refreshing = ready;
    }
  }

  /**
   * Settles when this level's exports may be served: level 0's latest
   * refresh for a nest (the engine's sync phase waits for it, starting it
   * if the nest has not yet); at once below.
   */
  exportsReady(): Promise<void> {
    return this.refreshing();
  }

  private refreshing: () => Promise<void> = ready;

  /**
   * The child link a path beyond this level goes through, or undefined when
   * the path is this level. A path of exactly [this, child] is that child.
   */
  private async via(levelPath: LevelPath | undefined, signal: AbortSignal): Promise<{ link: ChildLink; rest: LevelPath } | undefined> {
    const r = routeLevel(this.name, levelPath, this.tree.live().map((c) => c.name));
    if (!r) return undefined;
    const rec = this.d.journal.child(r.child)!;
    try {
      return { link: await this.d.links.get(rec.name, rec.endpoint!, signal), rest: r.rest };
    } catch (err) {
      await this.d.links.drop(rec.name);
      throw err;
    }
  }

  async destroy(opts: DestroyOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
    if (opts.levelPath && opts.levelPath.length > 0) {
      const r = routeLevel(this.name, opts.levelPath, this.tree.children().map((c) => c.name));
      if (!r) throw new InvalidArgumentError("destroy --level names the level hsctl talks to; to tear down the whole tree below it, leave --level out");
      // This level is the parent of the target: it tears that child (and its subtree) down itself.
      if (r.rest.length === 1) return this.destroy({ self: false, names: [r.child] }, sink, signal);
      const v = await this.via(opts.levelPath, signal);
      return v!.link.destroy({ self: false, levelPath: v!.rest }, relayUnder(this.name, sink), signal);
    }
    const select = opts.manifest || opts.names?.length
      ? (rec: ChildRecord) => (!opts.manifest || rec.manifest === opts.manifest) && (!opts.names?.length || opts.names.includes(rec.name))
      : undefined;
    try {
      await this.d.engine.destroy(sink, signal, select);
    } finally {
      if (opts.self) setImmediate(() => this.d.requestShutdown());
    }
  }

  async doctor(opts: DoctorOptions, signal: AbortSignal): Promise<CheckResult[]> {
    const v = await this.via(opts.levelPath, signal);
    if (v) return v.link.doctor({ ...opts, levelPath: v.rest }, signal);
    const n = this.d.config.nest;
    return this.d.engine.preflight(opts.provider ?? n.provider, opts.options ?? {}, signal);
  }

  /**
   * This level's log lines (or, by path, a level below, relayed). Before a
   * line leaves this level, any value of its secrets file is masked as well:
   * the logger's redaction is by field name, this is by value.
   */
  async *logs(opts: LogsOptions, signal: AbortSignal): AsyncIterable<LogLine> {
    const v = await this.via(opts.levelPath, signal);
    if (v) {
      for await (const l of v.link.logs({ ...opts, levelPath: v.rest }, signal)) yield { ...l, levelPath: [this.name, ...l.levelPath] };
      return;
    }
    if (!this.d.logLines) return;
    const values = secretValues(await this.d.secrets.read().catch(() => ({})));
    for await (const l of this.d.logLines.read({ follow: opts.follow, ...(opts.sinceMs !== undefined ? { sinceMs: opts.sinceMs } : {}) }, signal)) {
      if (opts.phase && !l.json.includes(`"phase":"${opts.phase}"`)) continue;
      yield { levelPath: [this.name], time: l.time, json: redactValues(l.json, values), dropped: l.dropped };
    }
  }

  async identify(): Promise<Identity> {
    await this.fault("identify", undefined, "handshake", new AbortController().signal);
    // The parent has authorized this level's key: its first sync's images may start. A fresh
    // level that is a node of its provider begins setting itself up now (level-configure.ts:
    // once per process; a later Identify gets the first promise); its template starts once
    // those images are in.
    this.reposAfter ??= this.configuring.begin();
    this.configuring.imagesUnderWay(this.d.repos.warmParent?.(this.reposAfter));
    const c = this.d.config;
    const { publicKey, hostKeyFingerprint, sshAddress } = this.d.identity();
    return {
      name: c.level.name, depth: c.level.depth, hsdVersion: this.d.version, publicKey, hostKeyFingerprint, sshAddress,
      repos: await (this.d.repos.stateNow ? this.d.repos.stateNow() : this.d.repos.state()).catch(() => []),
    };
  }

  async putSecrets(yaml: string): Promise<string[]> {
    await this.fault("secrets", undefined, "secrets", new AbortController().signal);
    const files = decodeLevelFiles(yaml, "PutSecrets request");
    if (!this.d.siteConfig || !this.d.config.parent) {
      throw new InvalidArgumentError("this level takes no secrets from a parent (level 0 reads the operator's site-config)");
    }
    return this.d.siteConfig.put(files);
  }

  /** This level's configure: its steps, the provider set-up, and the resume after its own reboot. */
  private readonly configuring: LevelConfigure;

  close(): void {
    this.configuring.close();
  }

  /** hsd is stopping, its API still open: a step the machine's reboot interrupts ends as this level's reboot (level-configure.ts). */
  stopForShutdown(graceMs: number): Promise<HsError | undefined> {
    return this.configuring.stopForShutdown(graceMs);
  }

  async configure(sink: EventSink, signal: AbortSignal, opts: { fresh: boolean } = { fresh: false }): Promise<void> {
    await this.fault("configure", sink, "configure", signal);
    await this.configuring.run(sink, signal, opts);
  }

  /** At boot: goes on with the configure whose step asked for the reboot that just happened (level-configure.ts). */
  resumeAfterReboot(): void {
    this.configuring.resumeAfterReboot();
  }

  /**
   * Refreshes this level's repos, then (recursive) every child in a wave down
   * the tree. A child that is down is reported and skipped; the rest go on.
   * Non-recursive (the nest sync phase, level 0 before a nest) throws on
   * failure. Recursive reports failures as events and returns: a dirty working
   * tree still lets the wave go on (the export was updated; only the checkout
   * was held), any other failure marks the subtree stale.
   */
  async sync(opts: SyncOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
    const v = await this.via(opts.levelPath, signal);
    // Relayed: the level at the path syncs from its own parent, not from the one whose refs came with the request.
    if (v) return v.link.sync({ recursive: opts.recursive, ...(opts.configure ? { configure: true } : {}), levelPath: v.rest }, relayUnder(this.name, sink), signal);
    return this.syncHere(opts, sink, signal);
  }

  private syncHere(opts: SyncOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
    // One sync at a time per level: watch mode and an operator's `hsctl sync`
    // must not refresh the same exports concurrently.
    const run = this.syncChain.then(() => this.syncOnce(opts, sink, signal));
    this.syncChain = run.catch(() => undefined);
    return run;
  }

  private syncChain: Promise<void> = Promise.resolve();

  /**
   * Set at the first Identify: settles once the set-up begun there has its
   * template under way (LevelConfigure.begin). The first sync's repos follow
   * it; consumed by that sync.
   */
  private reposAfter: Promise<void> | undefined;

  /**
   * Level 0 at start: refresh the exports once, quietly (no events, no fault
   * points), so a reader can clone before any sync or nest. Not on the sync
   * chain: level 0's RepoOps queues refreshes per repo, and a sync's refresh
   * asked for while a repo's start-up refresh still waits for its checkout
   * (a demo repo being generated) shares that refresh instead of following it.
   */
  exportAtStart(signal: AbortSignal): Promise<void> {
    return this.d.repos.refresh(signal, () => {}).then(() => undefined);
  }

  /** What this level serves its children now; undefined when it cannot say (the children then fetch every repo). */
  async exportRefs(): Promise<ParentRefs | undefined> {
    return this.d.repos.exportRefs?.().catch((err: unknown) => {
      this.d.log.warn({ err }, "could not read this level's exports for a sync request; children ask for every repo");
      return undefined;
    });
  }

  private async syncOnce(opts: SyncOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
    const started = this.d.clock.now();
    this.emit(sink, { phase: "sync", kind: "started" });
    let result: { repos: RepoState[]; bytes: number } | undefined;
    try {
      await this.checkpoint("sync", (message) => this.emit(sink, { phase: "sync", kind: "log", message }), signal);
      const progress = progressThrottle<SyncProgress>({
        intervalMs: PROGRESS_INTERVAL_MS, now: () => this.d.clock.now(), key: (p) => `${p.repo}\0${p.phase}`, leading: false,
        isFinal: (p) => p.total > 0 && p.loaded >= p.total,
        emit: (p) => this.emit(sink, {
          phase: "sync", kind: "progress", message: p.message ?? `${p.repo}: ${p.phase}`, progress: { unit: p.unit ?? "objects", done: p.loaded, total: p.total },
        }),
      });
      try {
        const after = this.reposAfter;
        this.reposAfter = undefined;
        result = await this.d.repos.refresh(signal, progress, opts.parentRefs, after);
      } finally {
        progress.flush();
      }
    } catch (err) {
      // An untyped error reaches the operator only as `Internal` and its message: its stack stays here.
      if (!(err instanceof HsError)) this.d.log.error({ err }, "sync failed with an untyped error");
      const details = err instanceof HsError ? err.details : {};
      const states = Array.isArray(details.states) ? (details.states as RepoState[]) : undefined;
      this.emit(sink, {
        phase: "sync", kind: "failed", durationMs: this.d.clock.now() - started, failure: toFailure(err),
        ...(states ? { repos: states, message: describeChanges(states) } : {}),
        ...(typeof details.bytes === "number" ? { bytes: details.bytes } : {}),
      });
      if (!opts.recursive) throw err;
      if (!(err instanceof DirtyWorktreeError)) {
        for (const rec of this.tree.live()) {
          this.tree.scope(rec.name, sink).emit({
            phase: "sync", kind: "skipped", message: `not synced: parent ${this.name} failed to sync (subtree of ${rec.name} is stale)`,
          });
        }
        return;
      }
    }
    if (result) {
      this.emit(sink, {
        phase: "sync", kind: "finished", durationMs: this.d.clock.now() - started, repos: result.repos, bytes: result.bytes,
        message: `${describeChanges(result.repos)}${result.bytes > 0 ? `; ${result.bytes} bytes received` : ""}`,
      });
    }
    if (opts.configure && result && this.d.config.parent) await this.reconfigure(sink, signal);
    // This level is going down for a step's reboot: its parent re-attaches to the configure it resumes; its subtree waits for the next wave.
    if (this.configuring.rebooting) return;
    // Leaves have no hsd to sync: this level configures them again from the trees it just synced.
    if (opts.configure && opts.recursive && result) await this.d.engine.reconfigureLeaves(sink, signal);
    if (!opts.recursive) return;
    // Read once for the whole wave (a leaf has no child to send them to): every child compares its exports with these.
    const parentRefs = this.tree.live().length > 0 ? await this.exportRefs() : undefined;
    await this.tree.walk(this.tree.live(), sink, ALL_AT_ONCE, (rec, at) => syncChild({
      rec, at, links: this.d.links, configure: opts.configure ?? false, configureBudgetMs: this.d.config.budgets.configure, parentRefs,
      signal, log: this.d.log, now: () => this.d.clock.now(),
      remember: (repos) => this.d.journal.update((j) => { const c = j.children[rec.name]; if (c) c.repos = repos; }),
    }));
  }

  /**
   * hsctl sync --configure: this level re-runs every configure step from the
   * trees just synced. A failure is reported as this level's configure event
   * and the wave goes on (its children run the code they were just sent).
   */
  private async reconfigure(sink: EventSink, signal: AbortSignal): Promise<void> {
    const started = this.d.clock.now();
    this.emit(sink, { phase: "configure", kind: "started", budgetMs: this.d.config.budgets.configure });
    try {
      await withTimeout(this.d.config.budgets.configure, () => new PhaseTimeoutError(`configure of ${this.name} overran its budget`, {
        details: { level: this.name, phase: "configure" },
      }), (sig) => this.configure(sink, sig, { fresh: true }), signal);
      // Ended by a reboot: the parent ends this configure once it has re-attached to the one resumed at boot.
      if (this.configuring.rebooting) return;
      this.emit(sink, { phase: "configure", kind: "finished", durationMs: this.d.clock.now() - started, budgetMs: this.d.config.budgets.configure });
    } catch (err) {
      this.emit(sink, { phase: "configure", kind: "failed", durationMs: this.d.clock.now() - started, failure: toFailure(err) });
      this.d.log.warn({ code: errorCode(err) }, "configure after sync failed");
    }
  }

  private get tree(): ChildTree {
    return this.d.engine.tree;
  }

  async status(signal: AbortSignal, levelPath?: LevelPath): Promise<LevelStatus> {
    const v = await this.via(levelPath, signal);
    if (v) return v.link.status(signal, v.rest);
    const c = this.d.config;
    const id = this.d.identity();
    const repos = await this.d.repos.state().catch(() => []);
    const children = valuesOrFirstFailure(await this.tree.walk(this.tree.children(), () => {}, ALL_AT_ONCE, async (rec): Promise<LevelStatus> => {
      // A leaf has no hsd to ask: its record is all there is.
      if (rec.node?.type === "vm") return childStatusFromRecord(rec, rec.state);
      if (!rec.endpoint || rec.state === "destroyed") return childStatusFromRecord(rec, "building");
      try {
        return await withTimeout(this.d.config.timeouts.connectMs, () => new PeerGoneError(`level ${rec.name} did not answer in time`), async (sig) => {
          const link = await this.d.links.get(rec.name, rec.endpoint!, sig);
          const st = await link.status(sig);
          return { ...st, state: rec.state === "failed" ? "failed" : st.state, phases: childStatusFromRecord(rec, rec.state).phases, ...(rec.manifest ? { manifest: rec.manifest } : {}) };
        }, signal);
      } catch (err) {
        await this.d.links.drop(rec.name);
        return { ...childStatusFromRecord(rec, "unreachable"), failure: toFailure(err) };
      }
    }));
    return {
      name: c.level.name, depth: c.level.depth, state: "ready", address: id.sshAddress, hsdVersion: this.d.version,
      hostKeyFingerprint: id.hostKeyFingerprint, provider: c.nest.provider, repos, phases: [],
      children: await Promise.all(children.map((ch) => ch.leaf ? ch : attestChild(ch, repos, this.d.repos.compare?.bind(this.d.repos)))), outOfSync: false,
    };
  }

  private checkpoint(point: string, announce: (message: string) => void, signal: AbortSignal): Promise<void> {
    return this.d.checkpoint ? this.d.checkpoint(point, announce, signal) : Promise.resolve();
  }

  /** A checkpoint at the start of a handler; what it announces goes to the caller's events (or the log). */
  private fault(point: string, sink: EventSink | undefined, phase: LevelEvent["phase"], signal: AbortSignal): Promise<void> {
    return this.checkpoint(point, (message) => {
      if (sink) this.emit(sink, { phase, kind: "log", message });
      else this.d.log.warn({ point }, message);
    }, signal);
  }

  private emit(sink: EventSink, ev: LocalEvent): void {
    this.tree.emitSelf(sink, ev);
  }
}
