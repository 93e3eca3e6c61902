// Every provider hsd can build children with: name -> factory. Adding a
// provider is its folder under src/providers/ plus one line here (and its name
// in domain/providers.ts). Only the daemon's wiring calls build().
// Imported by: src/daemon.

import type { HsdConfig } from "../config/config.js";
import type { ProviderName, IsolationMode } from "../domain/providers.js";
import type { Logger } from "../log/logger.js";
import type { SecretsStore } from "../secrets/secrets-store.js";
import { levelNetnsOps } from "./local/level-netns.js";
import { LocalProvider } from "./local/local-provider.js";
import { systemdScopePrefix } from "./local/child-scope.js";
import type { Provider } from "./provider.js";
import { lazyPveProvider } from "./pve/pve-wiring.js";

/** What any provider may be built from; each factory takes what it needs. */
export interface ProviderDeps {
  readonly config: HsdConfig;
  readonly secrets: SecretsStore;
  /** This level's own public key and the private key file it authenticates with. */
  readonly publicKey: string;
  readonly userKeyPath: string;
  readonly stateDir: string;
  /** argv that runs hsd, e.g. [process.execPath, "/abs/dist/daemon/hsd.js"]. */
  readonly hsdCommand: readonly string[];
  /** This level's path from the top (names). */
  readonly levelPath: readonly string[];
  readonly isRoot: boolean;
  /** This level is a systemd unit: local children each get a scope of their own (local/child-scope.ts). */
  readonly childScopes: boolean;
  readonly log: Logger;
}

/** Options a request may pass to a provider; only the provider that has them reads them. */
export interface ProviderOptions {
  /** local only: a process per child, or a process in its own network namespace. */
  readonly isolation: IsolationMode;
}

export type ProviderFactory = (deps: ProviderDeps, options: ProviderOptions) => Provider;

export const PROVIDERS: Readonly<Record<ProviderName, ProviderFactory>> = Object.freeze({
  local: (d, o) => new LocalProvider({
    parentRoot: d.config.root, hsdCommand: d.hsdCommand, isolation: o.isolation, levelPath: d.levelPath,
    netns: d.isRoot ? levelNetnsOps({ subnetBase: d.config.nest.subnetBase, log: d.log }) : null,
    shutdownMs: d.config.timeouts.shutdownMs, log: d.log.child({ provider: "local" }),
    ...(d.childScopes ? { scopePrefix: systemdScopePrefix } : {}),
  }),
  pve: (d) => lazyPveProvider({
    config: d.config, secrets: d.secrets, stateDir: d.stateDir, publicKey: d.publicKey, userKeyPath: d.userKeyPath,
    log: d.log.child({ provider: "pve" }),
  }),
});
