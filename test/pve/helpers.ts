// Shared setup for the pve tests: a started simulator and a client pinned to it.
// Test-only.

import assert from "node:assert/strict";
import { PveSim, type PveSimOptions } from "../pve-sim/pve-sim.js";
import { HsError } from "../../src/domain/errors.js";
import { PveClient, type PveClientOptions } from "../../src/providers/pve/pve-client.js";

export async function startSim(opts: PveSimOptions = {}): Promise<PveSim> {
  return new PveSim(opts).start();
}

export function clientFor(sim: PveSim, over: Partial<PveClientOptions> = {}): PveClient {
  return new PveClient({
    url: sim.url, fingerprint: sim.fingerprint, tokenId: sim.tokenId, tokenSecret: sim.tokenSecret,
    proxyRetryBaseMs: 1, ...over,
  });
}

/** Fast task polling for tests (the sim runs at timeScale 0.01). */
export const FAST_POLL = { pollInitialMs: 5, pollMaxMs: 20, timeoutMs: 30_000 } as const;

import { PveProvider, type PveProviderOptions } from "../../src/providers/pve/pve-provider.js";
import { simCommandRunner, type SimCommandRunner } from "../pve-sim/sim-commands.js";
import type { PhaseContext } from "../../src/providers/provider.js";
import { silentLogger } from "../../src/log/logger.js";
import { DEFAULT_PVE_IMAGE, type PveConfig } from "../../src/providers/pve/pve-config.js";

export const TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh+b/Q=test hsd@l0";

export function providerFor(sim: PveSim, over: Partial<PveProviderOptions> = {}, pveOver: Partial<PveConfig> = {}): { provider: PveProvider; commands: SimCommandRunner } {
  const commands = simCommandRunner(sim);
  const provider = new PveProvider({
    config: {
      url: sim.url, node: sim.node, tokenId: sim.tokenId, fingerprint: sim.fingerprint, storage: "local-lvm",
      snippetStorage: "local", template: sim.templateVmid, bridge: "vmbr0", cores: 2, memoryMiB: 2048, ...pveOver, image: pveOver.image ?? DEFAULT_PVE_IMAGE,
    },
    tokenSecret: sim.tokenSecret, sshPublicKeys: [TEST_KEY], commands,
    sysRoot: sim.paths.sysRoot, hostsFile: sim.paths.hostsFile, pveCertFile: sim.paths.certFile,
    hostname: sim.node, resolveHost: async () => [], minFreeKiB: 20 * 1024 * 1024,
    taskPoll: { initialMs: 5, maxMs: 20 }, agentPoll: { intervalMs: 5, minPauseMs: 5 }, bootTimeoutMs: 60_000,
    ...over,
  });
  return { provider, commands };
}

export type Emitted = Parameters<PhaseContext["emit"]>[0];

export function phaseCtx(events: Emitted[] = []): PhaseContext {
  return { signal: AbortSignal.timeout(120_000), log: silentLogger(), emit: (ev) => { events.push(ev); } };
}

/** Runs fn against a fresh simulator and always closes it. */
export async function withSim(opts: PveSimOptions, fn: (sim: PveSim) => Promise<void>): Promise<void> {
  const sim = await startSim(opts);
  try { await fn(sim); } finally { await sim.close(); }
}

/** The HsError a promise rejects with (fails the test if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<HsError> {
  try { await p; } catch (e) { assert.ok(e instanceof HsError, String(e)); return e; }
  assert.fail("expected a rejection");
}

import type { RecordedRequest } from "../pve-sim/pve-sim.js";
import { validateRequest } from "../pve-sim/pve-schema-check.js";
import { PVE_SCHEMA_BASELINE } from "../../src/providers/pve/pve-schema.js";

/**
 * Each recorded call checked against PVE's schema on `release` (default: the
 * oldest release the table knows, so a parameter newer than it counts too):
 * one line per call and parameter at fault; empty when all are valid.
 */
export function schemaViolations(requests: readonly RecordedRequest[], release: string = PVE_SCHEMA_BASELINE): string[] {
  const out: string[] = [];
  for (const r of requests) {
    const call = `${r.method} ${r.path}`;
    if (!r.template) { out.push(`${call}: not an endpoint of PVE's schema (answered ${r.status})`); continue; }
    const errors = validateRequest(`${r.method} ${r.template}`, r.params ?? {}, release) ?? {};
    for (const [param, msg] of Object.entries(errors)) out.push(`${call} ${JSON.stringify(r.params)}: ${param}: ${msg.trim()} (PVE ${release})`);
  }
  return out;
}
