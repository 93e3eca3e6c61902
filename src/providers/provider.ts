// The provider contract: how a child level comes to exist and goes away, and
// how a level that is itself a node of its provider sets itself up as one
// (ConfigureLevel). Implemented by providers/local and providers/pve.
// Providers never see proto types.
// Imported by: src/daemon, src/nest, src/providers, src/level.

import type { PlannedNode } from "../domain/plan.js";
import type { CheckResult } from "../domain/checks.js";
import type { EventSink, LocalEvent } from "../domain/events.js";
import type { Logger } from "../log/logger.js";
import type { ProviderName } from "../domain/providers.js";
import type { ReadyInfo } from "../util/ready-pipe.js";

/** What a provider records about a child; persisted in the parent's journal. JSON-safe. */
export interface ChildHandle {
  /** Level name, unique among siblings (e.g. "l2"). */
  readonly name: string;
  /** Provider-specific identity (pid, vmid, netns name...). */
  readonly data: Readonly<Record<string, unknown>>;
}

/** Everything the child's hsd needs in its config at install time. */
export interface ChildInstallSpec {
  readonly name: string;
  readonly depth: number;
  /** Parent SSH endpoint as reachable from the child. */
  readonly parentHost: string;
  readonly parentPort: number;
  readonly parentHostKeyFingerprint: string;
  /** The parent endpoint's host public key ("<type> <base64>"; "" unknown): its fingerprint is the one above. */
  readonly parentHostKey?: string;
  /** Parent's own public key: the child's controller. */
  readonly parentPublicKey: string;
  readonly repoNames: readonly string[];
  /** Extra YAML config keys for the child (budgets, timeouts...). */
  readonly extraConfig: Readonly<Record<string, unknown>>;
  /** The manifest node this child is (its spec reaches its configure steps). */
  readonly node?: { readonly spec: string; readonly manifest: string };
}

/** How the parent reaches a running child's SSH endpoint. */
export interface ChildEndpoint {
  readonly host: string;
  readonly port: number;
  readonly hostKeyFingerprint: string;
  /**
   * The child's own public key as its ready report gave it (the same report as
   * the host key): handshake authorizes it before asking the child who it is;
   * an answer naming another key replaces it. Absent (an endpoint journaled by
   * an older hsd): the answered key is authorized after the answer.
   */
  readonly publicKey?: string;
}

/** The endpoint a child's ready report gives, at the address its parent reaches it by (every provider's install). */
export function readyEndpoint(host: string, ready: ReadyInfo): ChildEndpoint {
  return { host, port: ready.sshPort, hostKeyFingerprint: ready.hostKeyFingerprint, ...(ready.publicKey ? { publicKey: ready.publicKey } : {}) };
}

export interface PhaseContext {
  readonly signal: AbortSignal;
  readonly log: Logger;
  /** Progress and log events for the running phase (levelPath is filled in by the engine). */
  readonly emit: (ev: { kind: "progress" | "log"; message?: string; progress?: { unit: string; done: number; total: number } }) => void;
}

export interface Provider {
  readonly name: ProviderName;
  /** Checks (and safely repairs) the host before building children. */
  preflight(ctx: PhaseContext): Promise<CheckResult[]>;
  /** Creates the child machine (not started). Idempotent for the same name. */
  /** `node`: a manifest node's size and fixed vmid (a taken vmid is VmidTaken, never another one). */
  /**
   * `install`: the child will run hsd, and install will be given this spec (a leaf gets none).
   * A provider may stage hsd to start during the boot; install then finds it running.
   */
  provision(name: string, depth: number, ctx: PhaseContext, node?: PlannedNode, install?: ChildInstallSpec): Promise<ChildHandle>;
  /** Starts it and waits until it has an address the parent can route to. */
  boot(child: ChildHandle, ctx: PhaseContext): Promise<ChildHandle & { readonly address: string }>;
  /** Puts hsd and its config on the child, starts it, resolves when it reports ready. */
  install(child: ChildHandle, spec: ChildInstallSpec, ctx: PhaseContext): Promise<{ handle: ChildHandle; endpoint: ChildEndpoint }>;
  /**
   * Reboots a leaf's machine (one of this level's configure steps asked for it)
   * and waits until it has an address again. Absent: its leaves cannot reboot.
   */
  reboot?(child: ChildHandle, ctx: PhaseContext): Promise<ChildHandle & { readonly address: string }>;
  /** Is the child's hsd process/VM still there (cheap, no RPC)? */
  alive(child: ChildHandle): Promise<boolean>;
  /** Stops and removes the child entirely. Idempotent: a missing child is done. */
  destroy(child: ChildHandle, ctx: PhaseContext): Promise<void>;
}

export type EventSinkFor = EventSink;

/** Set-up of this level when it is itself a node of the provider (pve: token, snippets, certificate, its template). */
export interface ConfigureLevel {
  /** The set-up, in the configure phase (joining what begin started). */
  run(emit: (ev: LocalEvent) => void, signal: AbortSignal): Promise<void>;
  /**
   * Starts, before configure is asked for (a fresh level, at its parent's
   * handshake), the part of the set-up that needs neither the delivered
   * secrets nor the configure steps (pve: token, certificate, snippets, and
   * the template once `imagesIn` says the images are in), so that it runs
   * beside the sync; run() joins it and replays its lines. Resolves (never
   * rejects) once that work needs nothing more of the sync: a first sync's
   * repos wait for it, so the template's inputs have the level to themselves.
   */
  begin?(signal: AbortSignal, imagesIn: Promise<boolean>): Promise<void>;
}
