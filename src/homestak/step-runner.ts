// Runs a level's configure steps (configure.steps) from its own synced trees:
// each step is an argv (no shell) in its own process group, with a budget,
// its output streamed as batched log events, and a journal record per step
// so a re-run skips finished steps and re-runs the failed or interrupted one.
// A step may ask for a reboot (step-reboot.ts): it is journaled as rebooting
// and run again after the boot, the steps before it are not. A step may also
// just reboot the machine: when hsd is stopped, or the step dies, while the
// machine is going down (going-down.ts), that is the same reboot, not a failure.
// A step's environment names the level and never holds a secret. Built by the
// daemon wiring; the level calls run().
// Imported by: src/daemon, src/level, src/nest.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { lookupUser, type PasswdEntry } from "../util/passwd.js";
import { constants } from "node:os";
import type { ConfigureStep, HsdConfig } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import { CancelledError, PhaseTimeoutError, RebootRefusedError, StepFailedError } from "../domain/errors.js";
import { stepOutputMessage } from "../domain/events.js";
import type { HomestakLayout } from "./layout.js";
import { STEP_OUTPUT_DEFAULTS, StepOutput } from "./step-output.js";
import { MAX_REBOOTS_PER_STEP, REBOOT_REQUEST_ENV, STEP_REBOOTS_ENV, rebootRequestFor, takeRebootRequest } from "./step-reboot.js";
import { SYSTEM_REBOOT_REASON, type GoingDown } from "./going-down.js";

/** What a step reports as it runs (the level turns these into configure events). */
export type StepEmit = (ev: { kind: "log" | "rebooting"; message: string }) => void;

/**
 * One configure step of this level (running = started and not known to have
 * ended: re-run it; rebooting = it asked for a reboot: run it again after the boot).
 */
export interface StepRecord {
  readonly kind: "running" | "finished" | "failed" | "rebooting";
  readonly at: number;
  readonly durationMs?: number;
  /** Reboots this step has been through (kept across its runs until it finishes). */
  readonly reboots?: number;
  /** rebooting: the step's own reason. */
  readonly reason?: string;
}

/**
 * How a run of the steps ended when it did not throw: all done, or a step asked
 * for a reboot (bySystem: the machine is rebooting already; nobody must ask for it).
 */
export type StepsOutcome = { readonly reboot?: undefined; /** The last step's record went through `finish` (see run()). */ readonly finished?: true }
  | { readonly reboot: { readonly step: string; readonly reason: string; readonly reboots: number; readonly bySystem?: true } };

/**
 * Persists the last step's finished record together with what the caller
 * records once all the steps are done (the level's configured mark): one
 * durable write where there were two, with nothing run between them.
 */
export type StepsFinish = (record: (steps: Record<string, StepRecord>) => void) => Promise<void>;

/** A step's end that is a reboot: asked for (its reason), or the machine's own going down. */
interface RebootEnd { readonly reason: string; readonly bySystem: boolean }

/** Past the grace, a stopped step's run has this long to journal how it ended. */
const SETTLE_MARGIN_MS = 1_000;

/** Did an earlier run stop for a reboot (this boot must resume it)? */
export function rebootPendingIn(steps: Readonly<Record<string, StepRecord>>): boolean {
  return Object.values(steps).some((s) => s.kind === "rebooting");
}

/** Where step results persist (the level's journal). */
export interface StepJournal {
  steps(): Readonly<Record<string, StepRecord>>;
  /** Applies `fn` to the step records and persists them. */
  updateSteps(fn: (steps: Record<string, StepRecord>) => void): Promise<void>;
}

export interface StepRunnerDeps {
  readonly config: Pick<HsdConfig, "level" | "nest" | "configure" | "parent">;
  readonly layout: HomestakLayout;
  readonly journal: StepJournal;
  readonly log: Logger;
  /** The level's path from the top (l0/l1/...). */
  readonly levelPath: readonly string[];
  readonly now: () => number;
  /** Environment the steps start from (the daemon passes a minimal one). */
  readonly baseEnv: Readonly<Record<string, string>>;
  /** Grace between SIGTERM and SIGKILL of a step's process group. */
  readonly killGraceMs: number;
  /** Set last (a leaf's steps: where the leaf is, who configures it). */
  readonly extraEnv?: Readonly<Record<string, string>>;
  /** Where a step writes a reboot request; absent: this level cannot reboot (the variable is not set). */
  readonly rebootRequestPath?: string;
  /** Is the machine going down? Absent: this level cannot reboot, a killed step is a failed one. */
  readonly goingDown?: GoingDown;
  /** Why a reboot asked for now must not happen (the children it would stop), or undefined. */
  readonly rebootBlocked?: () => string | undefined;
}

/** Step results kept in memory (a leaf's steps: its record in the parent's journal says whether configure finished). */
export function memoryStepJournal(): StepJournal {
  const steps: Record<string, StepRecord> = {};
  return { steps: () => steps, updateSteps: async (fn) => fn(steps) };
}

/** Only these of hsd's environment reach a step: nothing else could be a secret. */
export function stepBaseEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = { PATH: env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
  for (const k of ["HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"]) if (env[k]) out[k] = env[k]!;
  return out;
}

export class StepRunner {
  /** Running steps: process group -> how to stop it. */
  private readonly running = new Map<number, (why: StopWhy, graceMs?: number) => void>();
  /** Runs of the steps not yet over (hsd's stop waits for them to journal a reboot). */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly d: StepRunnerDeps) {}

  /** A run of the steps is under way. */
  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  /** The steps that apply to this level (their `when`). */
  applicable(): ConfigureStep[] {
    const { depth } = this.d.config.level;
    return this.d.config.configure.steps.filter((s) =>
      (s.when.provider === undefined || s.when.provider === this.d.config.nest.provider)
      && (s.when.minDepth === undefined || depth >= s.when.minDepth)
      && (s.when.maxDepth === undefined || depth <= s.when.maxDepth));
  }

  /**
   * Runs the applicable steps in order. `fresh` (hsctl sync --configure)
   * forgets earlier results and runs them all; otherwise finished steps are
   * skipped. Throws StepFailed, PhaseTimeout (a step's budget) or Cancelled.
   */
  run(opts: { fresh: boolean }, emit: StepEmit, signal: AbortSignal, first: readonly ConfigureStep[] = [], finish?: StepsFinish): Promise<StepsOutcome> {
    const p = this.runSteps(opts, emit, signal, first, finish);
    this.inFlight.add(p);
    const over = () => { this.inFlight.delete(p); };
    p.then(over, over);
    return p;
  }

  /**
   * hsd is stopping. When a step runs and the machine is going down, the step
   * is stopped as part of that reboot (SIGTERM, SIGKILL after `graceMs`),
   * journaled as rebooting and announced; this resolves true once its run has
   * recorded that (bounded). Otherwise it resolves false and changes nothing:
   * the API's close cancels the step as it always did.
   */
  async stopForShutdown(graceMs: number): Promise<boolean> {
    if (this.inFlight.size === 0 || !this.d.goingDown) return false;
    if (!(await this.d.goingDown.ask())) return false;
    this.d.log.warn({ steps: this.running.size }, "the machine is going down while configure steps run: they end with its reboot");
    for (const stop of this.running.values()) stop("system", graceMs);
    await settledWithin([...this.inFlight], graceMs + SETTLE_MARGIN_MS);
    return true;
  }

  private async runSteps(opts: { fresh: boolean }, emit: StepEmit, signal: AbortSignal, first: readonly ConfigureStep[], finish: StepsFinish | undefined): Promise<StepsOutcome> {
    // `first`: steps the level itself needs before the operator's (a PVE install).
    const steps = [...first, ...this.applicable()];
    if (opts.fresh) await this.d.journal.updateSteps((s) => { for (const k of Object.keys(s)) delete s[k]; });
    const done = this.d.journal.steps();
    for (const step of steps) {
      if (!opts.fresh && done[step.name]?.kind === "finished") {
        emit({ kind: "log", message: `step ${step.name}: finished in an earlier run, skipped` });
        continue;
      }
      if (signal.aborted) throw new CancelledError("configure cancelled", { details: { level: this.pathText, step: step.name } });
      const started = this.d.now();
      const reboots = done[step.name]?.reboots ?? 0;
      // The machine went down after the last step: this one starts after the boot (not counted, it never ran).
      if (this.d.goingDown?.isKnown) return this.rebooting(step.name, reboots, { reason: SYSTEM_REBOOT_REASON, bySystem: true }, emit);
      if (done[step.name]?.kind === "rebooting") emit({ kind: "log", message: `step ${step.name}: resumed after reboot ${reboots}` });
      await this.record(step.name, { kind: "running", at: started, ...(reboots ? { reboots } : {}) });
      let reboot: RebootEnd | undefined;
      try {
        reboot = await this.runOne(step, reboots, emit, signal);
        if (reboot !== undefined && reboots >= MAX_REBOOTS_PER_STEP) {
          const how = reboot.bySystem ? "was interrupted by" : "asked for";
          throw new StepFailedError(`step ${step.name} of ${this.pathText} ${how} reboot ${reboots + 1}; at most ${MAX_REBOOTS_PER_STEP} are allowed`, {
            details: { level: this.pathText, phase: "configure", step: step.name, exitCode: 0, lastLines: [reboot.reason] },
          });
        }
        // Asked for (the machine is not going down by itself yet): refused while it would take levels below with it.
        const blocked = reboot !== undefined && !reboot.bySystem ? this.d.rebootBlocked?.() : undefined;
        if (blocked !== undefined) {
          throw new RebootRefusedError(`step ${step.name} of ${this.pathText} asked for a reboot, refused: ${blocked}`, {
            details: { level: this.pathText, phase: "configure", step: step.name, lastLines: [reboot!.reason] },
          });
        }
      } catch (err) {
        await this.record(step.name, { kind: "failed", at: this.d.now(), durationMs: this.d.now() - started });
        throw err;
      }
      if (reboot !== undefined) return this.rebooting(step.name, reboots + 1, reboot, emit);
      const durationMs = this.d.now() - started;
      const rec: StepRecord = { kind: "finished", at: this.d.now(), durationMs, ...(reboots ? { reboots } : {}) };
      const last = step === steps[steps.length - 1] && finish !== undefined;
      if (last) await finish((s) => { s[step.name] = rec; });
      else await this.record(step.name, rec);
      emit({ kind: "log", message: `step ${step.name}: finished in ${durationMs} ms` });
      if (last) return { finished: true };
    }
    return {};
  }

  /** Kills every running step's process group (daemon shutdown). */
  killAll(): void {
    for (const pgid of this.running.keys()) killGroup(pgid, "SIGKILL");
  }

  /** Journaled before anyone hears of it: the boot resumes this step whatever happens next. */
  private async rebooting(step: string, reboots: number, end: RebootEnd, emit: StepEmit): Promise<StepsOutcome> {
    await this.record(step, { kind: "rebooting", at: this.d.now(), reboots, reason: end.reason });
    emit({ kind: "rebooting", message: `step ${step}: ${end.reason}` });
    return { reboot: { step, reason: end.reason, reboots, ...(end.bySystem ? { bySystem: true as const } : {}) } };
  }

  private get pathText(): string {
    return this.d.levelPath.join("/");
  }

  private record(name: string, rec: StepRecord): Promise<void> {
    return this.d.journal.updateSteps((s) => { s[name] = rec; });
  }

  private env(step: ConfigureStep, user: PasswdEntry | undefined, reboots: number, requestPath: string | undefined): Record<string, string> {
    const c = this.d.config;
    return {
      ...this.d.baseEnv,
      ...(user ? { HOME: user.home, USER: user.name, LOGNAME: user.name } : {}),
      ...step.env,
      HOMESTAK_ROOT: this.d.layout.root,
      HSD_LEVEL_NAME: c.level.name,
      HSD_LEVEL_PATH: this.pathText,
      HSD_LEVEL_DEPTH: String(c.level.depth),
      // What the level's manifest node says it should become (site-config specs/<spec>.yaml); "" outside a manifest.
      HSD_SPEC: c.level.spec,
      HSD_MANIFEST: c.level.manifest,
      HSD_PARENT_ADDRESS: c.parent ? `${c.parent.host}:${c.parent.port}` : "",
      HSD_STEP: step.name,
      [STEP_REBOOTS_ENV]: String(reboots),
      ...(requestPath ? { [REBOOT_REQUEST_ENV]: requestPath } : {}),
      ...this.d.extraEnv,
    };
  }

  /** Runs one step; resolves with how it rebooted when it asked for one or the machine went down under it. */
  private async runOne(step: ConfigureStep, reboots: number, emit: StepEmit, signal: AbortSignal): Promise<RebootEnd | undefined> {
    const level = this.pathText;
    const cwd = this.d.layout.stepCwd(step);
    const fail = (message: string, exitCode: number, lastLines: string[] = []) => new StepFailedError(message, {
      details: { level, phase: "configure", step: step.name, exitCode, lastLines },
    });
    if (!existsSync(cwd)) throw fail(`step ${step.name} of ${level}: its directory ${cwd} does not exist (is ${step.cwd} synced here?)`, -1);
    const user = step.user ? lookupUser(step.user) : undefined;
    if (step.user && !user) throw fail(`step ${step.name} of ${level}: no user ${step.user} on this level`, -1);
    if (user && process.getuid?.() !== 0 && process.getuid?.() !== user.uid) {
      throw fail(`step ${step.name} of ${level}: running as ${step.user} needs hsd to run as root`, -1);
    }
    emit({ kind: "log", message: `step ${step.name}: ${step.run.join(" ")} (in ${cwd})` });
    const request = this.d.rebootRequestPath ? await rebootRequestFor(this.d.rebootRequestPath, user) : undefined;
    try {
      return await this.spawnStep(step, user, cwd, reboots, request?.path, emit, signal, fail);
    } finally {
      await request?.done();
    }
  }

  private async spawnStep(
    step: ConfigureStep, user: PasswdEntry | undefined, cwd: string, reboots: number, requestPath: string | undefined, emit: StepEmit, signal: AbortSignal,
    fail: (message: string, exitCode: number, lastLines?: string[]) => StepFailedError,
  ): Promise<RebootEnd | undefined> {
    const level = this.pathText;
    const log = this.d.log.child({ step: step.name });
    const out = new StepOutput({
      ...STEP_OUTPUT_DEFAULTS,
      emit: (lines) => emit({ kind: "log", message: stepOutputMessage(step.name, lines) }),
    });
    const proc = spawn(step.run[0]!, step.run.slice(1), {
      cwd, env: this.env(step, user, reboots, requestPath), detached: true, stdio: ["ignore", "pipe", "pipe"],
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
    const pgid = proc.pid;
    out.attach(proc.stdout!);
    out.attach(proc.stderr!);
    let stopped: StopWhy | undefined;
    const stop = (why: StopWhy, graceMs = this.d.killGraceMs) => {
      if (stopped || !pgid) return;
      stopped = why;
      log.warn({ why, pgid }, "stopping the step's process group");
      killGroup(pgid, "SIGTERM");
      setTimeout(() => killGroup(pgid, "SIGKILL"), graceMs).unref();
    };
    if (pgid) this.running.set(pgid, stop);
    // Started while hsd's stop was deciding (it stops only the steps it saw): the reboot takes this one too.
    if (this.d.goingDown?.isKnown) stop("system", Math.min(this.d.killGraceMs, SETTLE_MARGIN_MS));
    const budget = setTimeout(() => stop("budget"), step.budgetMs);
    const onAbort = () => stop("cancel");
    signal.addEventListener("abort", onAbort, { once: true });
    let exit: { code: number | null; sig: NodeJS.Signals | null; spawnError?: Error };
    try {
      exit = await new Promise((res) => {
        proc.once("error", (e) => res({ code: null, sig: null, spawnError: e }));
        proc.once("close", (code, sig) => res({ code, sig }));
      });
    } finally {
      clearTimeout(budget);
      signal.removeEventListener("abort", onAbort);
      out.close();
    }
    if (pgid) {
      // Whatever the step left in its group goes with it when it was stopped.
      if (stopped) await waitGroupGone(pgid, this.d.killGraceMs + 1000);
      this.running.delete(pgid);
    }
    if (exit.spawnError) throw fail(`step ${step.name} of ${level}: cannot start ${step.run[0]}: ${(exit.spawnError as NodeJS.ErrnoException).code ?? exit.spawnError.message}`, -1);
    // A step that did not end well while the machine goes down ended with it
    // (hsd stopped for the reboot, or the step killed first): asked before anything is journaled.
    if (stopped === "system" || (stopped !== "budget" && (stopped === "cancel" || exit.code !== 0) && await this.machineGoingDown())) {
      if (requestPath) await takeRebootRequest(requestPath); // void: the step did not end by itself
      log.warn({ code: exit.code, signal: exit.sig }, "the step ended while the machine is going down: resumed after the reboot");
      return { reason: SYSTEM_REBOOT_REASON, bySystem: true };
    }
    if (stopped === "cancel") throw new CancelledError(`step ${step.name} of ${level} cancelled`, { details: { level, phase: "configure", step: step.name } });
    if (stopped === "budget") {
      throw new PhaseTimeoutError(`step ${step.name} of ${level} overran its budget of ${step.budgetMs} ms`, {
        details: { level, phase: "configure", step: step.name, budgetMs: step.budgetMs, lastLines: out.lastLines() },
      });
    }
    const code = exit.code ?? 128 + (exit.sig ? constants.signals[exit.sig] ?? 0 : 0);
    if (code !== 0) {
      if (requestPath) await takeRebootRequest(requestPath); // void: the step failed
      const last = out.lastLines();
      throw fail(`step ${step.name} of ${level} exited ${code}${last.length ? `; last lines:\n${last.join("\n")}` : ""}`, code, last);
    }
    const reason = requestPath ? await takeRebootRequest(requestPath) : undefined;
    return reason === undefined ? undefined : { reason, bySystem: false };
  }

  private async machineGoingDown(): Promise<boolean> {
    return this.d.goingDown ? this.d.goingDown.ask() : false;
  }
}

/** Why hsd stopped a step: its budget, a cancel, or the machine going down. */
type StopWhy = "budget" | "cancel" | "system";

/** Resolves when every promise has settled, or after `ms`; never rejects. */
async function settledWithin(ps: readonly Promise<unknown>[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.allSettled(ps), new Promise<void>((r) => { timer = setTimeout(r, ms); })]);
  clearTimeout(timer);
}

function killGroup(pgid: number, sig: NodeJS.Signals): void {
  try { process.kill(-pgid, sig); } catch { /* already gone */ }
}

/** Waits (bounded) until no process is left in the group: kill(-pgid, 0) fails with ESRCH. */
async function waitGroupGone(pgid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try { process.kill(-pgid, 0); } catch { return; }
    if (Date.now() > deadline) { killGroup(pgid, "SIGKILL"); return; }
    await new Promise((r) => setTimeout(r, 20));
  }
}
