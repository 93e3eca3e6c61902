// The local provider's request options: how a child is separated from its
// parent, a process (loopback) or a process in its own network namespace.
// The registry declares them; hsctl names them in its flags.
// Imported by: src/cli, src/providers.

import type { ProviderOptions, ProviderOptionSpec } from "../../domain/providers.js";

export const ISOLATION_MODES = Object.freeze(["process", "netns"] as const);
export type IsolationMode = (typeof ISOLATION_MODES)[number];

export function isIsolationMode(s: string): s is IsolationMode {
  return (ISOLATION_MODES as readonly string[]).includes(s);
}

/** Its options, for the registry (hsd.yaml nest.isolation sets the level's default). */
export const LOCAL_OPTIONS: Readonly<Record<string, ProviderOptionSpec>> = Object.freeze({
  isolation: Object.freeze({ values: ISOLATION_MODES, default: "process" }),
});

/** The isolation a validated options bag asks for. */
export function isolationOf(options: ProviderOptions): IsolationMode {
  const v = options.isolation ?? "process";
  return isIsolationMode(v) ? v : "process";
}
