// The nest engine: builds this level's children phase by phase, with budgets, a
// journal for resume, live events and deepest-first teardown. It works on
// domain types only; providers, links, journal, clock and logger are injected.
// Imported by: src/daemon, src/level.

import { type HsdConfig } from "../config/config.js";
import { PHASES, type PhaseName } from "../domain/phases.js";
import { CancelledError, HsError, PhaseTimeoutError, errorCode } from "../domain/errors.js";
import type { Logger } from "../log/logger.js";
import type { Provider } from "../providers/provider.js";
import type { SecretTree } from "../secrets/secrets-store.js";
import { withTimeout } from "../util/timeout.js";
import type { ChildLinks } from "./child-link.js";
import type { AccessApi, NestOptions } from "../domain/level-api.js";
import type { EventSink } from "../domain/events.js";
import { toFailure, type Failure } from "../domain/failure.js";
import type { ChildRecord, Journal } from "./journal.js";
import type { PhaseHook, PhaseRun, SelfInfo } from "./phase-hook.js";
import { PHASE_HOOKS } from "./phases/index.js";
import { ChildTree, ONE_AT_A_TIME, valuesOrFirstFailure, type ChildScope, type LocalEvent } from "./child-tree.js";
import type { ProviderName, ProviderOptions } from "../domain/providers.js";

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
  /** This level's children: the engine's walks and the level's (sync, status) go through it. */
  readonly tree: ChildTree;

  constructor(private readonly d: NestEngineDeps) {
    this.hooks = d.hooks ?? PHASE_HOOKS;
    this.tree = new ChildTree({ self: d.self, journal: d.journal, clock: d.clock });
  }

  /** The budget of a phase; nest's 0 means the sum of every other budget per level below. */
  budgetOf(phase: PhaseName, levelsBelowChild: number): number {
    const b = this.d.config.budgets;
    if (phase !== "nest" || b.nest > 0) return b[phase];
    const perLevel = PHASES.filter((p) => p !== "nest").reduce((s, p) => s + b[p], 0);
    return Math.max(1, levelsBelowChild) * perLevel;
  }

  /** The provider's preflight checks alone (hsctl doctor); repairs what is safe to repair. */
  preflight(provider: ProviderName, options: ProviderOptions, signal: AbortSignal) {
    return this.d.providers(provider, options).preflight({ signal, log: this.d.log.child({ phase: "preflight" }), emit: () => {} });
  }

  /** Builds opts.depth levels below this one: opts.width children here, each recursing. */
  async nest(opts: NestOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
    if (opts.depth <= 0) return;
    const names = childNames(this.d.self().depth, opts.width).map((name, index) => ({ name, index }));
    valuesOrFirstFailure(await this.tree.walk(names, sink, { concurrency: this.d.config.nest.maxParallel },
      (c, at) => this.buildChild(c.index, opts, at, signal)));
  }

  private async buildChild(index: number, opts: NestOptions, at: ChildScope, signal: AbortSignal): Promise<void> {
    const self = this.d.self();
    const { name, path, emit } = at;
    const log = this.d.log.child({ child: name });

    let rec = this.d.journal.child(name) ?? {
      name, index, provider: opts.provider, options: opts.options, state: "building", phases: {},
    } satisfies ChildRecord;
    const provider = this.d.providers(rec.provider, rec.options);
    rec = await this.checkResume(rec, provider, log);
    rec.state = "building";
    await this.save(rec);

    for (const hook of this.hooks) {
      const phase = hook.name;
      const budgetMs = this.budgetOf(phase, opts.depth - 1);
      const done = rec.phases[phase];
      if (done?.kind === "finished" && phase !== "nest") {
        emit({ phase, kind: "skipped", durationMs: 0, budgetMs, message: "finished in an earlier run" });
        continue;
      }
      const started = this.d.clock.now();
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
        if (phase === "nest") rec.state = "ready";
        await this.save(rec);
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
      log: log.child({ phase }),
      link: () => this.d.links.get(rec.name, rec.endpoint!, signal),
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

  /** Tears down every child, deepest first. Idempotent: no children is a no-op. */
  async destroy(sink: EventSink, signal: AbortSignal): Promise<void> {
    valuesOrFirstFailure(await this.tree.walk(this.tree.teardownOrder(), sink, ONE_AT_A_TIME, (rec, at) => this.teardownChild(rec, at, signal)));
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

function fmtMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
