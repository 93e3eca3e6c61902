// The contract of one build phase (one hook per file under ./phases, in the
// manner of nomad's client lifecycle hooks). Only the nest engine runs hooks.
// Imported by: src/nest, src/daemon.

import type { HsdConfig } from "../config/config.js";
import type { PhaseName } from "../domain/phases.js";
import type { Logger } from "../log/logger.js";
import type { ChildHandle, Provider } from "../providers/provider.js";
import type { ChildRecord } from "./journal.js";
import type { ChildLink } from "./child-link.js";
import type { AccessApi, NestOptions, ParentRefs } from "../domain/level-api.js";
import type { EventSink } from "../domain/events.js";
import type { SecretTree } from "../secrets/secrets-store.js";
import type { CheckResult } from "../domain/checks.js";
import type { StepJournal, StepsOutcome } from "../homestak/step-runner.js";

/** An image's sha256 (lower-case hex) and size in bytes. */
export interface ImageFacts { readonly sha256: string; readonly size: number }

/** What this level knows about itself that a child build needs. */
export interface SelfInfo {
  readonly name: string;
  readonly depth: number;
  /** This level's own public key: the child's controller. */
  readonly publicKey: string;
  readonly sshPort: number;
  readonly sshAdvertiseHost: string;
  readonly hostKeyFingerprint: string;
  /** The SSH endpoint's host public key ("<type> <base64>"); the child's OpenSSH pins it. */
  readonly hostKey: string;
}

export interface PhaseRun {
  readonly phase: PhaseName;
  /** The record being built; hooks mutate it, the engine persists it after the hook. */
  readonly rec: ChildRecord;
  readonly request: NestOptions;
  readonly provider: Provider;
  readonly config: HsdConfig;
  readonly self: SelfInfo;
  readonly access: AccessApi;
  /** This level's homestak secrets (config/secrets.yaml; level 0: the operator's). */
  readonly readSecrets: () => Promise<SecretTree>;
  /** This level's config/site.yaml text, if any. */
  readonly readSite: () => Promise<string | undefined>;
  /** The level's own checks (images), run with the provider's. */
  readonly levelChecks: () => Promise<CheckResult[]>;
  /** The sha256 and size of this level's images as far as it knows them now (never hashes). */
  readonly knownImages: () => Promise<Readonly<Record<string, ImageFacts>>>;
  /** What this level's exports serve now (sync sends it along); undefined: unknown. */
  readonly exportRefs: () => Promise<ParentRefs | undefined>;
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly budgetMs: number;
  /** Opens (or reuses) the tunnel link to the child. */
  readonly link: () => Promise<ChildLink>;
  /** Closes and forgets the link: the next link() dials again (a child back from its reboot). */
  readonly dropLink: () => Promise<void>;
  /** The engine's clock. */
  readonly now: () => number;
  /** Emits progress/log for this phase (path and phase filled in). */
  readonly emit: (ev: { kind: "progress" | "log" | "rebooting"; message?: string; progress?: { unit: string; done: number; total: number }; bytes?: number }) => void;
  /** Relays an event from the child, prefixing this level's name. */
  readonly relay: EventSink;
  /** Runs this level's configure steps against a leaf (no hsd there). */
  readonly configureLeaf: ConfigureLeaf;
  /** Persists `rec` as it stands now (the engine also does after the hook). */
  readonly save: () => Promise<void>;
}

/** A leaf as this level's configure steps see it. */
export interface LeafTarget {
  readonly name: string;
  readonly address: string;
  readonly spec: string;
  readonly manifest: string;
  readonly handle: ChildHandle;
}

/**
 * One run of the steps against a leaf: `journal` holds the leaf's step records
 * (fresh: forget them first); ends with the reboot a step asked for, if any.
 */
export type ConfigureLeaf = (
  leaf: LeafTarget, emit: PhaseRun["emit"], signal: AbortSignal, run: { readonly journal: StepJournal; readonly fresh: boolean },
) => Promise<StepsOutcome>;

export interface PhaseHook {
  readonly name: PhaseName;
  /** The child fetches this level's exports in this phase: the engine runs it only once they may be served. */
  readonly readsExports?: boolean;
  /**
   * Running it again after a crash is safe and cheap, and it leaves nothing
   * that a resume or a destroy must find in the journal (no machine, no
   * authorized key): its finish becomes durable with the next journal write
   * instead of one of its own. A crash before then re-runs it, as a crash
   * during it would.
   */
  readonly redoable?: true;
  run(r: PhaseRun): Promise<void>;
}
