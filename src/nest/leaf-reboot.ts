// A leaf's configure across the reboots its steps ask for. A leaf (manifest
// `type: vm`) runs no hsd: this level runs its own configure steps against it,
// so a step that needs the leaf rebooted (a kernel its playbook installed)
// writes its reason to $HSD_REBOOT_REQUEST as a level's step does. The step is
// journaled `rebooting` in the leaf's record here before anything is said, a
// `rebooting` event goes out in the leaf's configure, this level reboots the
// leaf through its provider and waits for its address (bounded by the
// configure budget through the signal), then runs that step again with
// HSD_STEP_REBOOTS > 0 (not the steps before it). Used by the leaf configure
// hook and by `hsctl sync --configure`'s leaf wave.
// Imported by: src/nest.

import { NotImplementedError } from "../domain/errors.js";
import { rebootPendingIn, type StepJournal, type StepRecord } from "../homestak/step-runner.js";
import type { Logger } from "../log/logger.js";
import type { Provider } from "../providers/provider.js";
import type { ChildRecord } from "./journal.js";
import type { ConfigureLeaf, PhaseRun } from "./phase-hook.js";

export interface LeafConfigureRun {
  readonly rec: ChildRecord;
  readonly provider: Provider;
  readonly configureLeaf: ConfigureLeaf;
  /** Persists `rec` now (its step records must outlive this process before the reboot is asked for). */
  readonly save: () => Promise<void>;
  readonly emit: PhaseRun["emit"];
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly now: () => number;
  /** hsctl sync --configure: the first run forgets earlier step results (a resumed one never does). */
  readonly fresh: boolean;
}

/** Runs the leaf's configure steps to the end, rebooting the leaf each time a step asks (the runner caps the count per step). */
export async function configureLeafAcrossReboots(o: LeafConfigureRun): Promise<void> {
  const journal = recordSteps(o.rec, o.save);
  let fresh = o.fresh;
  // A reboot journaled by an earlier run of this hsd that ended before the leaf was back: it may never have happened.
  if (!fresh && rebootPendingIn(journal.steps())) await rebootLeaf(o, "asked for before this hsd restarted");
  for (;;) {
    const outcome = await o.configureLeaf({
      name: o.rec.name, address: o.rec.address ?? "", spec: o.rec.node?.spec ?? "", manifest: o.rec.manifest ?? "", handle: o.rec.handle!,
    }, o.emit, o.signal, { journal, fresh });
    fresh = false;
    if (!outcome.reboot) return;
    o.log.warn({ step: outcome.reboot.step, reboots: outcome.reboot.reboots }, "a configure step asked for a reboot of the leaf; rebooting it");
    await rebootLeaf(o, `step ${outcome.reboot.step}`);
  }
}

/** Reboots the leaf through its provider and waits for its address; its record keeps the new one. */
async function rebootLeaf(o: LeafConfigureRun, why: string): Promise<void> {
  if (!o.provider.reboot) {
    throw new NotImplementedError(`a reboot of leaf ${o.rec.name} was asked for (${why}), which the ${o.provider.name} provider cannot do`, {
      details: { level: o.rec.name, phase: "configure" },
    });
  }
  const since = o.now();
  o.emit({ kind: "log", message: `${o.rec.name} is rebooting; waiting for it to come back` });
  const back = await o.provider.reboot(o.rec.handle!, { signal: o.signal, log: o.log, emit: o.emit });
  o.rec.handle = { name: back.name, data: back.data };
  o.rec.address = back.address;
  await o.save();
  o.emit({ kind: "log", message: `${o.rec.name} is back after ${Math.round((o.now() - since) / 1000)} s at ${back.address}; resuming its configure` });
}

/** The leaf's step records live in its record here (the journal's), so a re-run after this hsd's own restart resumes them. */
function recordSteps(rec: ChildRecord, save: () => Promise<void>): StepJournal {
  return {
    steps: () => rec.steps ?? {},
    updateSteps: async (fn: (steps: Record<string, StepRecord>) => void) => {
      rec.steps ??= {};
      fn(rec.steps);
      await save();
    },
  };
}
