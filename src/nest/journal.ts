// The level's build journal: which children exist, how to reach them and which
// of their phases finished. Written atomically after every phase so a re-run
// resumes where the last one stopped. Owned by the nest engine and the level;
// nothing else writes state/journal.json.
// Imported by: src/daemon, src/level, src/nest.

import type { StepRecord } from "../homestak/step-runner.js";
import { writeFileAtomic } from "../util/atomic-write.js";
import { readTextIfExists } from "../util/read-if-exists.js";
import { SerialQueue } from "../util/serial-queue.js";
import { StateCorruptError } from "../domain/errors.js";
import type { PhaseName } from "../domain/phases.js";
import type { ChildEndpoint, ChildHandle } from "../providers/provider.js";
import type { Failure } from "../domain/failure.js";
import type { LevelStateName } from "../domain/level-api.js";
import type { RepoState } from "../domain/events.js";
import type { ProviderName, ProviderOptions } from "../domain/providers.js";
import type { PlannedNode } from "../domain/plan.js";

export interface PhaseRecord {
  readonly kind: "finished" | "failed";
  readonly durationMs: number;
  readonly budgetMs: number;
  readonly failure?: Failure;
  /** Epoch ms when the phase ended. */
  readonly at: number;
}

export interface ChildRecord {
  readonly name: string;
  /** Sibling index, 0-based; stable for the child's life (netns /30s derive from it). */
  readonly index: number;
  readonly provider: ProviderName;
  /** The options the child was built with, for its provider alone (a destroy or resume needs the same). */
  readonly options: ProviderOptions;
  state: LevelStateName;
  handle?: ChildHandle;
  address?: string;
  endpoint?: ChildEndpoint;
  /** Learned at handshake; the child's own public key (authorized here as reader). */
  publicKey?: string;
  hsdVersion?: string;
  repos?: RepoState[];
  phases: Partial<Record<PhaseName, PhaseRecord>>;
  /** A manifest's node: which manifest built it (destroy -M) and what it is. */
  manifest?: string;
  node?: PlannedNode;
  /** A leaf's configure steps, run by this level against it (a step's reboot of the leaf resumes from these). */
  steps?: Record<string, StepRecord>;
}

export interface JournalData {
  version: 1;
  children: Record<string, ChildRecord>;
  /** This level's own configure phase (run when its parent asks). */
  configured?: PhaseRecord;
  /** This level's configure steps by name (src/homestak/step-runner.ts). */
  steps?: Record<string, StepRecord>;
}

export class Journal {
  private data: JournalData = { version: 1, children: {} };
  private readonly queue = new SerialQueue();

  constructor(private readonly path: string, private readonly hooks: { beforeRename?: (tmp: string) => Promise<void> | void } = {}) {}

  async load(): Promise<void> {
    const text = await readTextIfExists(this.path);
    if (text === undefined) return;
    try {
      const v = JSON.parse(text) as JournalData;
      if (v.version !== 1 || typeof v.children !== "object" || v.children === null) throw new Error("shape");
      for (const c of Object.values(v.children)) upgradeRecord(c);
      this.data = v;
    } catch (err) {
      throw new StateCorruptError(`journal ${this.path} is not valid`, { details: { path: this.path }, cause: err });
    }
  }

  /** A deep copy: callers never mutate the journal outside update(). */
  snapshot(): JournalData {
    return structuredClone(this.data);
  }

  child(name: string): ChildRecord | undefined {
    const c = this.data.children[name];
    return c ? structuredClone(c) : undefined;
  }

  children(): ChildRecord[] {
    return Object.values(this.data.children).map((c) => structuredClone(c)).sort((a, b) => a.index - b.index);
  }

  /** This level's configure step records (a copy); the step runner's view of the journal. */
  steps(): Record<string, StepRecord> {
    return structuredClone(this.data.steps ?? {});
  }

  updateSteps(fn: (steps: Record<string, StepRecord>) => void): Promise<void> {
    return this.update((d) => { fn((d.steps ??= {})); });
  }

  /**
   * Applies `fn` to the live data now (readers see it at once) without a
   * write: it becomes durable with the next update(). For changes a crash may
   * lose because the state before them is as good to resume from.
   */
  stage(fn: (d: JournalData) => void): void {
    fn(this.data);
  }

  /** Applies `fn` to the live data and persists it; writers are serialized. */
  update(fn: (d: JournalData) => void): Promise<void> {
    return this.queue.run(async () => {
      fn(this.data);
      await writeFileAtomic(this.path, JSON.stringify(this.data, null, 2), { mode: 0o600, beforeRename: this.hooks.beforeRename });
    });
  }
}

/**
 * A journal written before provider options were opaque kept the local
 * provider's isolation as its own field: it becomes that child's options.
 */
function upgradeRecord(c: ChildRecord & { isolation?: string }): void {
  if (c.options === undefined) (c as { options: ProviderOptions }).options = c.isolation ? { isolation: c.isolation } : {};
  delete c.isolation;
}
