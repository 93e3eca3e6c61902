// The names of the providers a level can build children with, written once. The
// registry (src/providers/registry.ts) maps each name to its factory; every
// validator (config, gRPC, hsctl) checks against PROVIDER_NAMES.
// Imported by: anyone.

export const PROVIDER_NAMES = Object.freeze(["local", "pve"] as const);
export type ProviderName = (typeof PROVIDER_NAMES)[number];

/** How the local provider separates a child: a process, or a process in its own network namespace. */
export const ISOLATION_MODES = Object.freeze(["process", "netns"] as const);
export type IsolationMode = (typeof ISOLATION_MODES)[number];

export function isProviderName(s: string): s is ProviderName {
  return (PROVIDER_NAMES as readonly string[]).includes(s);
}

export function isIsolationMode(s: string): s is IsolationMode {
  return (ISOLATION_MODES as readonly string[]).includes(s);
}
