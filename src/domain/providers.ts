// The names of the providers a level can build children with. The registry
// (src/providers/registry.ts) maps each name to its implementation.
// Imported by: anyone.

export type ProviderName = "local" | "pve";
export type IsolationMode = "process" | "netns";
