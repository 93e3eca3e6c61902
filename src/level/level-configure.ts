// A level's configure phase: the provider's set-up of the level, its configure
// steps, and the reboot a step may ask for (announced, journaled, then resumed
// at the next boot, with the parent re-attaching to that resumed run), or
// that a step just does (hsd stopped while the machine goes down: the same).
// Imported by: src/level.

import type { ConfigureStep, HsdConfig } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import type { Journal, JournalData } from "../nest/journal.js";
import type { Clock } from "../nest/nest-engine.js";
import { errorCode, CancelledError, LevelWentDownError, PhaseTimeoutError, type HsError } from "../domain/errors.js";
import type { GoingDown } from "../homestak/going-down.js";
import type { EventSink, LocalEvent, RepoState } from "../domain/events.js";
import { rebootPendingIn, type StepRecord, type StepRunner, type StepsFinish, type StepsOutcome } from "../homestak/step-runner.js";
import { ConfigureRun } from "./configure-run.js";
import { withTimeout } from "../util/timeout.js";
import { settleAll } from "../util/settle-all.js";
import type { ConfigureLevel } from "../providers/provider.js";

/** What the configure phase needs of its level (LevelDeps extends it). */
export interface ConfigureDeps {
  readonly config: HsdConfig;
  readonly log: Logger;
  readonly clock: Clock;
  readonly journal: Journal;
  /** The level's repos as checked out (logged at the start of configure). */
  readonly repos: { verify(): Promise<RepoState[]> };
  /** Provider-specific setup of this level (on PVE: token, snippets, certificate, its template). */
  readonly configureHook?: ConfigureLevel;
  /** This level's configure steps (configure.steps). */
  readonly steps?: StepRunner;
  /**
   * What this level installs before anything else when its image lacks it
   * (a PVE level on plain Debian: Proxmox VE); the provider set-up waits for it.
   */
  readonly systemInstall?: { needed(signal: AbortSignal): Promise<boolean>; readonly step: ConfigureStep };
  /**
   * Reboots the machine this level runs on (a configure step asked for it);
   * the level's hsd is started again at boot. Absent: this level cannot reboot.
   */
  readonly reboot?: (reason: string) => Promise<void>;
  /** Is this level's machine going down (asked when hsd stops)? Absent: it cannot reboot, and a stop is a cancel. */
  readonly goingDown?: GoingDown;
}

export class LevelConfigure {
  constructor(
    private readonly d: ConfigureDeps,
    /** Emits as this level (the tree's own path stamp). */
    private readonly emit: (sink: EventSink, ev: LocalEvent) => void,
  ) {}

  /** Aborted when the daemon stops: work nobody asked for (a resumed configure) ends with it. */
  private readonly lifetime = new AbortController();
  /** Configure calls (and the resumed run) not over yet. */
  private readonly calls = new Set<Promise<unknown>>();

  close(): void {
    this.lifetime.abort(new CancelledError("hsd is stopping"));
  }

  /**
   * hsd is stopping (before its API closes): when the machine is going down
   * under a running step, that step ends as this level's reboot, and the
   * configure calls end with `rebooting` sent (bounded by about 2x `graceMs`).
   * Resolves with what calls still running end with when the machine is going
   * down (outside a step too: the provider's set-up, a sync), else undefined:
   * a plain stop (systemctl stop hsd) stays an operator's cancel.
   */
  async stopForShutdown(graceMs: number): Promise<HsError | undefined> {
    if (this.d.steps?.busy) {
      // The runner asks whether the machine is going down; its no is final here.
      if (!(await this.d.steps.stopForShutdown(graceMs))) return undefined;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled([...this.calls]), new Promise<void>((r) => { timer = setTimeout(r, graceMs); })]);
      clearTimeout(timer);
    } else if (!this.d.goingDown || !(await this.d.goingDown.ask())) {
      return undefined;
    }
    return new LevelWentDownError(`level ${this.name} went down (its machine is rebooting or powering off) while hsd worked outside a configure step`, {
      details: { level: this.name },
    });
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.calls.add(p);
    const over = () => { this.calls.delete(p); };
    p.then(over, over);
    return p;
  }

  private get name(): string {
    return this.d.config.level.name;
  }

  /** The configure this level resumed at boot, until a caller has heard its end. */
  private resumed: ConfigureRun | undefined;
  /** Set once a step's reboot is decided: this hsd is going away. */
  private rebootUnderWay: string | undefined;

  /** A step's reboot is decided (asked for, or the machine going down under it): nothing more starts here. */
  get rebooting(): boolean {
    return this.rebootUnderWay !== undefined;
  }

  /** Set by the first begin(): the set-up is begun ahead at most once per process, and later calls get its promise. */
  private begun: Promise<void> | undefined;
  /** Settles the images' promise begin() hands on; only the first call counts. */
  private imagesBegun!: (p: Promise<boolean>) => void;
  private readonly imagesIn = new Promise<boolean>((r) => { this.imagesBegun = r; });

  /**
   * At the parent's handshake (Identify): the first sync's images are under
   * way (`settled`: whether they all got in; undefined: none asked for). The
   * template begun ahead starts once they are in.
   */
  imagesUnderWay(settled: Promise<boolean> | undefined): void {
    this.imagesBegun(settled ?? Promise.resolve(true));
  }

  /**
   * The parent's handshake reached this level: a fresh level (never
   * configured, no reboot to resume) that is already a node of its provider
   * starts the provider's set-up now, beside its sync (ConfigureLevel.begin),
   * and its template once imagesUnderWay's images are in; its configure joins
   * it. One whose image lacks the node software sets itself up only after its
   * install, in configure, as before. Resolves (never rejects) when the first
   * sync's repos may go: at once when nothing was begun. Begun at the daemon's
   * start instead, the set-up took CPU from the handshake (measured: a wash).
   */
  begin(): Promise<void> {
    this.begun ??= this.beginOnce();
    return this.begun;
  }

  private beginOnce(): Promise<void> {
    const hook = this.d.configureHook;
    if (!hook?.begin || !this.d.config.parent) return Promise.resolve();
    if (this.d.journal.snapshot().configured || rebootPendingIn(this.d.journal.steps())) return Promise.resolve();
    const signal = AbortSignal.any([this.lifetime.signal, AbortSignal.timeout(this.d.config.budgets.configure)]);
    const probe = this.d.systemInstall ? this.d.systemInstall.needed(signal) : Promise.resolve(false);
    return probe.then((needed) => (needed ? undefined : hook.begin!(signal, this.imagesIn)), () => undefined);
  }

  /** The configure call (the level's checkpoint has run): a fresh one, or the parent attaching to the resumed one. */
  run(sink: EventSink, signal: AbortSignal, opts: { fresh: boolean }): Promise<void> {
    return this.track(this.runHere(sink, signal, opts));
  }

  private async runHere(sink: EventSink, signal: AbortSignal, opts: { fresh: boolean }): Promise<void> {
    // The parent re-attaching after this level's reboot: to the configure the boot resumed
    // (started here if the call came before the daemon's start did it).
    this.resumeAfterReboot();
    if (this.resumed && !this.resumed.claimed) return this.resumed.attach(sink, signal);
    if (this.rebootUnderWay !== undefined) {
      // The old boot, still draining: the parent must wait for the new one.
      this.emit(sink, { phase: "configure", kind: "rebooting", message: `reboot under way (${this.rebootUnderWay})` });
      return;
    }
    await this.afterConfigure(await this.configureHere(sink, signal, opts));
  }

  /**
   * At boot: when a configure step asked for the reboot that just happened,
   * its configure goes on (that step first, none before it again), bounded by
   * the configure budget; the parent attaches to it when it reconnects.
   */
  resumeAfterReboot(): void {
    if (this.resumed || this.rebootUnderWay !== undefined || !this.d.config.parent || !rebootPendingIn(this.d.journal.steps())) return;
    const signal = this.lifetime.signal;
    const budgetMs = this.d.config.budgets.configure;
    this.d.log.info({ phase: "configure", budgetMs }, "resuming configure after this level's reboot");
    this.resumed = new ConfigureRun((sink) => this.track((async () => {
      const outcome = await withTimeout(budgetMs, () => new PhaseTimeoutError(`configure of ${this.name} overran its budget after a reboot`, {
        details: { level: this.name, phase: "configure", budgetMs },
      }), (sig) => this.configureHere(sink, sig, { fresh: false }), signal);
      await this.afterConfigure(outcome);
    })()));
  }

  /** A step asked for a reboot: the configure call ends first (its stream drains on the way down), then the machine reboots. */
  private async afterConfigure(outcome: StepsOutcome): Promise<void> {
    if (!outcome.reboot) return;
    const { reason } = outcome.reboot;
    this.rebootUnderWay = reason;
    if (outcome.reboot.bySystem) {
      // The machine is rebooting already (a step did it): nothing to ask for.
      this.d.log.warn({ phase: "configure", step: outcome.reboot.step, reboots: outcome.reboot.reboots }, "the machine is going down under a configure step; it resumes after the boot");
      return;
    }
    this.d.log.warn({ phase: "configure", step: outcome.reboot.step, reboots: outcome.reboot.reboots }, "configure step asked for a reboot; rebooting");
    const reboot = this.d.reboot;
    setImmediate(() => {
      reboot?.(reason).catch((err: unknown) => this.d.log.error({ err, code: errorCode(err) }, "reboot failed"));
    });
  }

  private async configureHere(sink: EventSink, signal: AbortSignal, opts: { fresh: boolean }): Promise<StepsOutcome> {
    const started = this.d.clock.now();
    // The repos' lines open the configure, but reading them (one batched git
    // status, 15-25 ms) only feeds those lines: the work starts beside it and its
    // events wait behind them, in order, none dropped. The read never writes
    // (GIT_OPTIONAL_LOCKS=0), so a step's own git is not locked out. A failed
    // read ends the work and is what the configure fails with, as when it came first.
    let held: LocalEvent[] | undefined = [];
    const emit = (ev: LocalEvent) => { if (held) held.push(ev); else this.emit(sink, ev); };
    const release = () => { const q = held ?? []; held = undefined; for (const ev of q) this.emit(sink, ev); };
    const readFailed = new AbortController();
    const verified = this.d.repos.verify().then((repos) => {
      for (const r of repos) {
        this.emit(sink, { phase: "configure", kind: "log", message: `${r.name} at ${r.worktreeCommit.slice(0, 12)}${r.dirty ? " (dirty)" : ""}` });
      }
    }, (err: unknown) => { readFailed.abort(err); throw err; }).finally(release);
    const configured = (j: JournalData) => {
      j.configured = { kind: "finished", durationMs: this.d.clock.now() - started, budgetMs: this.d.config.budgets.configure, at: this.d.clock.now() };
    };
    // The last step's record and the configured mark in one write; the mark only once the read has succeeded.
    const finish = async (record: (steps: Record<string, StepRecord>) => void) => {
      const readOk = await verified.then(() => true, () => false);
      await this.d.journal.update((j) => { record((j.steps ??= {})); if (readOk) configured(j); });
    };
    const [, outcome] = await settleAll([verified, this.configureWork(emit, AbortSignal.any([signal, readFailed.signal]), opts, finish)]);
    if (outcome.reboot) return outcome;
    if (!outcome.finished) await this.d.journal.update(configured);
    return {};
  }

  /** The configure's work after the repos' read: the node software's install, the provider set-up, the steps. */
  private async configureWork(emit: (ev: LocalEvent) => void, signal: AbortSignal, opts: { fresh: boolean }, finish: StepsFinish): Promise<StepsOutcome> {
    // An image without the node's software (PVE on plain Debian): its install is the first step, the set-up comes after it.
    const install = this.d.systemInstall && this.d.steps && this.d.config.parent && await this.d.systemInstall.needed(signal) ? this.d.systemInstall.step : undefined;
    if (install) emit({ phase: "configure", kind: "log", message: `${install.name}: this level's image lacks its node software; installing it first` });
    // Provider-specific setup of this level (a PVE node: token, snippets, certificate).
    if (this.d.configureHook && !install) await this.d.configureHook.run(emit, signal);
    if (this.d.steps && this.d.config.parent) {
      // After an install, the provider's set-up still runs past the last step: the mark waits for it.
      const outcome = await this.d.steps.run(opts, (ev) => emit({ phase: "configure", ...ev }), signal, install ? [install] : [], install ? undefined : finish);
      if (outcome.reboot || outcome.finished) return outcome;
    }
    if (this.d.configureHook && install) await this.d.configureHook.run(emit, signal);
    return {};
  }
}
