// The nest engine: builds this level's children phase by phase, with budgets, a
// journal for resume, live events and deepest-first teardown. It works on
// domain types only; providers, links, journal, clock and logger are injected.
// Imported by: src/daemon, src/level.

import { type HsdConfig } from "../config/config.js";
import type { CheckResult } from "../domain/checks.js";
import { PHASES, type PhaseName } from "../domain/phases.js";
import { CancelledError, HsError, ManifestInvalidError, NotImplementedError, PhaseTimeoutError, errorCode } from "../domain/errors.js";
import type { Logger } from "../log/logger.js";
import type { Provider } from "../providers/provider.js";
import type { SecretTree } from "../secrets/secrets-store.js";
import { withTimeout } from "../util/timeout.js";
import type { ChildLinks } from "./child-link.js";
import type { AccessApi, NestOptions, ParentRefs } from "../domain/level-api.js";
import type { EventSink } from "../domain/events.js";
import { toFailure, type Failure } from "../domain/failure.js";
import type { ChildRecord, Journal } from "./journal.js";
import type { ConfigureLeaf, ImageFacts, PhaseHook, PhaseRun, SelfInfo } from "./phase-hook.js";
import { LEAF_HOOKS, PHASE_HOOKS } from "./phases/index.js";
import { configureLeafAcrossReboots } from "./leaf-reboot.js";
import { ChildTree, ONE_AT_A_TIME, valuesOrFirstFailure, type ChildScope, type LocalEvent } from "./child-tree.js";
import type { ProviderName, ProviderOptions } from "../domain/providers.js";
import { heightOf, rootsOf, subtreeOf, unheldImages, type BuildPlan, type PlannedNode } from "../domain/plan.js";

export interface Clock {
  now(): number;
}

export interface NestEngineDeps {
  readonly config: HsdConfig;
  readonly self: () => SelfInfo;
  /** The provider for a child; options are the request's for that provider, passed through unread. */
  readonly providers: (name: ProviderName, options: ProviderOptions) => Provider;
  readonly journal: Journal;
  readonly links: ChildLinks;
  readonly access: AccessApi;
  readonly readSecrets: () => Promise<SecretTree>;
  readonly readSite?: () => Promise<string | undefined>;
  /** This level's own checks run with every preflight (the images it serves its children). */
  readonly levelChecks?: () => Promise<CheckResult[]>;
  /** The sha256 and size of this level's images it already knows (never hashes): a child is told them at install. */
  readonly knownImages?: () => Promise<Readonly<Record<string, ImageFacts>>>;
  readonly clock: Clock;
  readonly log: Logger;
  /** Phase hooks, in order; tests may wrap them (fault injection). */
  readonly hooks?: readonly PhaseHook[];
  /**
   * Settles when this level's exports may be served; hooks that read them
   * (readsExports: sync) wait for it and fail with its error. Level 0 refreshes
   * its exports while its children boot; below, they are ready before a nest.
   */
  readonly exportsReady?: () => Promise<void>;
  /** What this level's exports serve now, sent with a child's sync (it skips what it holds); absent or undefined: it asks for every repo. */
  readonly exportRefs?: () => Promise<ParentRefs | undefined>;
  readonly leafHooks?: readonly PhaseHook[];
  /** Runs this level's configure steps against a leaf; absent: leaves cannot be built here. */
  readonly configureLeaf?: ConfigureLeaf;
}

/** Phases after `from` (inclusive) are forgotten when a child must be restarted. */
const RESTART_FROM: PhaseName = "install";

/** Child names: l2 for a chain, l2a/l2b/... when a level has several children. */
export function childNames(parentDepth: number, width: number): string[] {
  const d = parentDepth + 1;
  if (width <= 1) return [`l${d}`];
  return Array.from({ length: width }, (_, i) => `l${d}${String.fromCharCode(97 + i)}`);
}

/** The failure a thrown value becomes in an event: code and a secret-free message. */
export class NestEngine {
  private readonly hooks: readonly PhaseHook[];
  private readonly leafHooks: readonly PhaseHook[];
  /** This level's children: the engine's walks and the level's (sync, status) go through it. */
  readonly tree: ChildTree;

  constructor(private readonly d: NestEngineDeps) {
    this.hooks = d.hooks ?? PHASE_HOOKS;
    this.leafHooks = d.leafHooks ?? LEAF_HOOKS;
    this.tree = new ChildTree({ self: d.self, journal: d.journal, clock: d.clock });
  }

  /** The budget of a phase; nest's 0 means the sum of every other budget per level below. */
  budgetOf(phase: PhaseName, levelsBelowChild: number): number {
    const b = this.d.config.budgets;
    if (phase !== "nest" || b.nest > 0) return b[phase];
    const perLevel = PHASES.filter((p) => p !== "nest").reduce((s, p) => s + b[p], 0);
    return Math.max(1, levelsBelowChild) * perLevel;
  }

  /** The checks a build's preflight runs, and nothing else (hsctl doctor): this level's own, then the provider's, with safe repairs. */
  async preflight(provider: ProviderName, options: ProviderOptions, signal: AbortSignal): Promise<CheckResult[]> {
    const own = await (this.d.levelChecks ?? (async () => []))();
    return [...own, ...await this.d.providers(provider, options).preflight({ signal, log: this.d.log.child({ phase: "preflight" }), emit: () => {} })];
  }

  /**
   * Builds opts.depth levels below this one: opts.width children here (or a
   * manifest plan's roots), each recursing.
   */
  async nest(opts: NestOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
    const plan = opts.plan;
    if (plan) {
      this.checkOwnership(plan);
      if (plan.prune) await this.prune(plan, sink, signal);
    }
    if (opts.depth <= 0) return;
    const names = plan
      ? this.manifestIndices(rootsOf(plan.nodes).map((n) => n.name))
      : childNames(this.d.self().depth, opts.width).map((name, index) => ({ name, index }));
    const existed = new Set(this.tree.children().map((c) => c.name));
    // on_error stop: no sibling starts after a failure (those under way finish); siblings go on otherwise.
    const walked = await this.tree.walk(names, sink, { concurrency: this.d.config.nest.maxParallel, stopAfterFailure: plan?.onError === "stop" },
      (c, at) => this.buildChild(c.index, childRequest(opts, c.name), at, signal));
    if (walked.failures.length > 0 && plan?.onError === "rollback") {
      // Deeper levels rolled back their own new children before failing up to here.
      const created = names.map((n) => n.name).filter((n) => !existed.has(n) && this.d.journal.child(n));
      this.d.log.warn({ manifest: plan.manifest, created }, "on_error rollback: destroying the levels this run created");
      await this.destroy(sink, signal, (rec) => created.includes(rec.name)).catch((err) => this.d.log.error({ code: errorCode(err) }, "rollback incomplete"));
    }
    valuesOrFirstFailure(walked);
  }

  /**
   * hsctl sync --configure: this level re-runs its configure steps against
   * each ready leaf (leaves have no hsd to sync). Failures are events; the wave goes on.
   */
  async reconfigureLeaves(sink: EventSink, signal: AbortSignal): Promise<void> {
    const budgetMs = this.d.config.budgets.configure;
    await this.tree.walk(this.tree.readyLeaves(), sink, ONE_AT_A_TIME, async (rec, at) => {
      const emit = (ev: Omit<LocalEvent, "phase">) => at.emit({ ...ev, phase: "configure" });
      const started = this.d.clock.now();
      emit({ kind: "started", budgetMs });
      try {
        if (!this.d.configureLeaf) throw new NotImplementedError("this level cannot configure leaves", { details: { level: rec.name } });
        const configureLeaf = this.d.configureLeaf;
        const log = this.d.log.child({ child: rec.name, phase: "configure" });
        await withTimeout(budgetMs, () => new PhaseTimeoutError(`configure of leaf ${at.path.join("/")} overran its budget`, {
          details: { level: at.path.join("/"), phase: "configure", budgetMs },
        }), (sig) => configureLeafAcrossReboots({
          rec, provider: this.d.providers(rec.provider, rec.options), configureLeaf, save: () => this.save(rec), emit: (ev) => emit(ev),
          signal: sig, log, now: () => this.d.clock.now(), fresh: true,
        }), signal);
        emit({ kind: "finished", durationMs: this.d.clock.now() - started, budgetMs });
      } catch (err) {
        this.d.log.warn({ child: rec.name, code: errorCode(err) }, "leaf configure after sync failed");
        emit({ kind: "failed", durationMs: this.d.clock.now() - started, budgetMs, failure: toFailure(err) });
      }
    });
  }

  /**
   * A manifest root must not be a level another manifest (or a uniform nest)
   * built here, and must be made from an image this level holds (below level 0:
   * one its parent passed down).
   */
  private checkOwnership(plan: BuildPlan): void {
    const errors = rootsOf(plan.nodes).flatMap((n) => {
      const rec = this.d.journal.child(n.name);
      if (!rec || rec.manifest === plan.manifest) return [];
      const owner = rec.manifest ? `manifest ${rec.manifest}` : "hsctl nest --depth";
      return [{ file: plan.manifest, node: n.name, field: "name", message: `a level ${n.name} already exists here, built by ${owner}` }];
    }).concat(unheldImages(plan, Object.keys(this.d.config.images.entries)).map((e) => ({ file: plan.manifest, ...e })));
    if (errors.length > 0) {
      throw new ManifestInvalidError(`${plan.manifest}: ${errors.map((e) => `node ${e.node}: ${e.message}`).join("; ")}`, { details: { file: plan.manifest, errors } });
    }
  }

  /** --prune: children this manifest built that it no longer names go, with their subtrees. */
  private async prune(plan: BuildPlan, sink: EventSink, signal: AbortSignal): Promise<void> {
    const keep = new Set(rootsOf(plan.nodes).map((n) => n.name));
    const gone = this.tree.children().filter((c) => c.manifest === plan.manifest && !keep.has(c.name)).map((c) => c.name);
    if (gone.length === 0) return;
    this.d.log.info({ manifest: plan.manifest, gone }, "pruning levels the manifest no longer names");
    await this.destroy(sink, signal, (rec) => gone.includes(rec.name));
  }

  /**
   * A manifest child keeps its index across runs; each new one takes the
   * lowest index still free (netns /30s derive from it), so siblings started
   * together never share one.
   */
  private manifestIndices(names: readonly string[]): { name: string; index: number }[] {
    const used = new Set(this.tree.children().map((c) => c.index));
    let free = 0;
    return names.map((name) => {
      const existing = this.d.journal.child(name);
      if (existing) return { name, index: existing.index };
      while (used.has(free)) free++;
      used.add(free);
      return { name, index: free };
    });
  }

  private async buildChild(index: number, opts: NestOptions & { node?: PlannedNode }, at: ChildScope, signal: AbortSignal): Promise<void> {
    const self = this.d.self();
    const { name, path, emit } = at;
    const log = this.d.log.child({ child: name });

    let rec = this.d.journal.child(name) ?? {
      name, index, provider: opts.provider, options: opts.options, state: "building", phases: {},
      ...(opts.plan ? { manifest: opts.plan.manifest } : {}),
    } satisfies ChildRecord;
    const node = opts.plan && opts.node;
    if (node) rec.node = node;
    const provider = this.d.providers(rec.provider, rec.options);
    rec = await this.checkResume(rec, provider, log);
    rec.state = "building";
    // Not written yet: until provision has made a machine, a crash loses nothing a resume or destroy needs.
    this.stage(rec);

    const hooks = rec.node?.type === "vm" ? this.leafHooks : this.hooks;
    for (const hook of hooks) {
      const phase = hook.name;
      const budgetMs = this.budgetOf(phase, opts.depth - 1);
      const done = rec.phases[phase];
      if (done?.kind === "finished" && phase !== "nest") {
        emit({ phase, kind: "skipped", durationMs: 0, budgetMs, message: "finished in an earlier run" });
        continue;
      }
      const started = this.d.clock.now();
      // Each phase change in the level's own log too: `hsctl logs --phase P` finds it there.
      log.info({ phase, budgetMs }, "phase started");
      emit({ phase, kind: "started", budgetMs });
      try {
        if (signal.aborted) throw new CancelledError("build cancelled", { details: { level: path.join("/"), phase } });
        await withTimeout(
          budgetMs,
          () => new PhaseTimeoutError(`phase ${phase} of ${path.join("/")} overran its budget of ${fmtMs(budgetMs)}`, {
            details: { level: path.join("/"), phase, budgetMs },
          }),
          async (phaseSignal) => {
            // Level 0 may still be refreshing its exports while children boot.
            if (hook.readsExports && this.d.exportsReady) await this.d.exportsReady();
            return hook.run(this.phaseRun(hook, rec, opts, provider, self, phaseSignal, log, budgetMs, at));
          },
          signal,
        );
        const durationMs = this.d.clock.now() - started;
        rec.phases[phase] = { kind: "finished", durationMs, budgetMs, at: this.d.clock.now() };
        const last = hook === hooks[hooks.length - 1];
        if (last) rec.state = "ready";
        if (hook.redoable && !last) this.stage(rec);
        else await this.save(rec);
        log.info({ phase, durationMs }, "phase finished");
        emit({ phase, kind: "finished", durationMs, budgetMs });
      } catch (raw) {
        const err = signal.aborted && !(raw instanceof HsError) ? new CancelledError("build cancelled", { cause: raw }) : raw;
        const durationMs = this.d.clock.now() - started;
        const failure = toFailure(err);
        log.warn({ phase, code: failure.code, durationMs }, "phase failed");
        rec.phases[phase] = { kind: "failed", durationMs, budgetMs, failure, at: this.d.clock.now() };
        rec.state = "failed";
        await this.save(rec).catch((e) => log.error({ err: e }, "journal write failed"));
        await this.d.links.drop(name);
        emit({ phase, kind: "failed", durationMs, budgetMs, failure });
        throw err;
      }
    }
  }

  private phaseRun(
    hook: PhaseHook, rec: ChildRecord, request: NestOptions, provider: Provider, self: SelfInfo, signal: AbortSignal,
    log: Logger, budgetMs: number, at: ChildScope,
  ): PhaseRun {
    const phase = hook.name;
    return {
      phase, rec, request, provider, self, signal, budgetMs, relay: at.relay,
      config: this.d.config,
      access: this.d.access,
      readSecrets: this.d.readSecrets,
      readSite: this.d.readSite ?? (async () => undefined),
      levelChecks: this.d.levelChecks ?? (async () => []),
      knownImages: this.d.knownImages ?? (async () => ({})),
      exportRefs: this.d.exportRefs ?? (async () => undefined),
      log: log.child({ phase }),
      save: () => this.save(rec),
      link: () => this.d.links.get(rec.name, rec.endpoint!, signal),
      dropLink: () => this.d.links.drop(rec.name),
      now: () => this.d.clock.now(),
      configureLeaf: this.d.configureLeaf ?? (async () => {
        throw new NotImplementedError("this level cannot configure leaves (no configure steps wired)", { details: { level: rec.name } });
      }),
      emit: (ev) => at.emit({ phase, ...ev }),
    };
  }

  /**
   * A child whose hsd is gone must be restarted: its install and every later
   * phase are forgotten. A live child keeps its finished phases (not rebuilt).
   */
  private async checkResume(rec: ChildRecord, provider: Provider, log: Logger): Promise<ChildRecord> {
    if (rec.phases[RESTART_FROM]?.kind !== "finished" || !rec.handle) return rec;
    let alive = await provider.alive(rec.handle).catch(() => false);
    if (alive && rec.endpoint) {
      const ac = new AbortController();
      alive = await withTimeout(this.d.config.timeouts.connectMs, () => new PhaseTimeoutError("identify timed out"), async (sig) => {
        const link = await this.d.links.get(rec.name, rec.endpoint!, sig);
        await link.identify();
        return true;
      }, ac.signal).catch(async () => {
        await this.d.links.drop(rec.name);
        return false;
      });
    }
    if (alive) return rec;
    log.info({ code: "PeerGone" }, "child hsd is gone; restarting it from the install phase");
    const from = PHASES.indexOf(RESTART_FROM);
    for (const p of PHASES.slice(from)) delete rec.phases[p];
    return rec;
  }

  private save(rec: ChildRecord): Promise<void> {
    return this.d.journal.update((j) => { j.children[rec.name] = structuredClone(rec); });
  }

  /** The record as it stands, in the journal's live data only: the next save() writes it. */
  private stage(rec: ChildRecord): void {
    this.d.journal.stage((j) => { j.children[rec.name] = structuredClone(rec); });
  }

  /** Tears down every child (or those `select` picks), deepest first. Idempotent: no children is a no-op. */
  async destroy(sink: EventSink, signal: AbortSignal, select: (rec: ChildRecord) => boolean = () => true): Promise<void> {
    valuesOrFirstFailure(await this.tree.walk(this.tree.teardownOrder().filter(select), sink, ONE_AT_A_TIME, (rec, at) => this.teardownChild(rec, at, signal)));
  }

  private async teardownChild(rec: ChildRecord, at: ChildScope, signal: AbortSignal): Promise<void> {
    const started = this.d.clock.now();
    const emit = (ev: Omit<LocalEvent, "phase">) => at.emit({ ...ev, phase: "teardown" });
    emit({ kind: "started" });
    const provider = this.d.providers(rec.provider, rec.options);
    const log = this.d.log.child({ child: rec.name, phase: "teardown" });
    try {
      // Let a live child tear down its own subtree first; a dead one is
      // cleaned up by its provider, which knows how to find its descendants.
      if (rec.endpoint && rec.handle && (await provider.alive(rec.handle).catch(() => false))) {
        await withTimeout(this.d.config.timeouts.commandMs, () => new PhaseTimeoutError(`teardown of ${at.path.join("/")} timed out`), async (sig) => {
          const link = await this.d.links.get(rec.name, rec.endpoint!, sig);
          await link.destroy({ self: false }, at.relay, sig);
        }, signal).catch((err) => log.warn({ code: errorCode(err) }, "child could not tear down its subtree; its provider will"));
      }
      await this.d.links.drop(rec.name);
      if (rec.handle) await provider.destroy(rec.handle, { signal, log, emit: (ev) => emit(ev) });
      if (rec.publicKey) await this.d.access.removeKey({ publicKey: rec.publicKey }).catch(() => false);
      await this.d.journal.update((j) => { delete j.children[rec.name]; });
      emit({ kind: "finished", durationMs: this.d.clock.now() - started });
    } catch (err) {
      emit({ kind: "failed", durationMs: this.d.clock.now() - started, failure: toFailure(err) });
      throw err;
    }
  }
}

/**
 * What a child is asked to build: the uniform tree's remaining depth, or its
 * own manifest subtree (depth = the child itself plus the subtree's height).
 */
function childRequest(opts: NestOptions, name: string): NestOptions & { node?: PlannedNode } {
  if (!opts.plan) return opts;
  const nodes = subtreeOf(opts.plan.nodes, name);
  const node = opts.plan.nodes.find((n) => n.name === name);
  return { ...opts, depth: 1 + heightOf(nodes), plan: { ...opts.plan, nodes }, ...(node ? { node } : {}) };
}

function fmtMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
