// The names of the providers a level can build children with, and the opaque
// options a request passes to one. The names are API (proto, journal, hsd.yaml,
// configure steps' `when`), so every validator checks against PROVIDER_NAMES;
// what each provider is and which options it takes is its registry entry's
// (src/providers/registry.ts): the engine passes options through unread.
// Imported by: anyone.

export const PROVIDER_NAMES = Object.freeze(["local", "pve"] as const);
export type ProviderName = (typeof PROVIDER_NAMES)[number];

export function isProviderName(s: string): s is ProviderName {
  return (PROVIDER_NAMES as readonly string[]).includes(s);
}

/** A request's options for its provider (local: isolation); only that provider reads them. */
export type ProviderOptions = Readonly<Record<string, string>>;

/** One option a provider takes: its allowed values and its default (hsd.yaml nest.<option> overrides it). */
export interface ProviderOptionSpec {
  readonly values: readonly string[];
  readonly default: string;
}
