// Every provider hsd can build children with: name -> its entry. An entry owns
// everything provider-specific: how to build the provider, the request options
// it takes (validated here, passed through the engine unread), its share of
// hsd.yaml, and the set-up of a level that is itself one of its nodes. Adding a
// provider is its folder under src/providers/ plus one line here (and its name
// in domain/providers.ts: names are API).
// Imported by: src/cli, src/daemon.

import type { HsdConfig, ProviderConfigSpec } from "../config/config.js";
import { PROVIDER_NAMES, type ProviderName, type ProviderOptions, type ProviderOptionSpec } from "../domain/providers.js";
import { InvalidArgumentError } from "../domain/errors.js";
import type { Logger } from "../log/logger.js";
import type { SecretsStore } from "../secrets/secrets-store.js";
import type { ImageDigests } from "../images/image-digest.js";
import { levelNetnsOps } from "./local/level-netns.js";
import { LocalProvider } from "./local/local-provider.js";
import { systemdScopePrefix } from "./local/child-scope.js";
import { isolationOf, LOCAL_OPTIONS } from "./local/local-options.js";
import type { ConfigureLevel, Provider } from "./provider.js";
import { PVE_CONFIG, pveConfigOf } from "./pve/pve-config.js";
import { lazyPveProvider, pveConfigure } from "./pve/pve-wiring.js";
import type { HomestakNodeFiles } from "./pve/homestak-node.js";
import { pveSystemInstall, type SystemInstall } from "./pve/pve-install-step.js";

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
  /** sha256s of this level's images, cached by size and mtime (a PVE node makes its template from one). */
  readonly digests: ImageDigests;
  readonly log: Logger;
}

export interface ProviderEntry {
  /** Builds the provider for validated options (one instance per distinct options). */
  build(deps: ProviderDeps, options: ProviderOptions): Provider;
  /** Its hsd.yaml share: request options (nest.<option>) and section. */
  readonly config: ProviderConfigSpec;
  /** When a level whose nest.provider is this one configures itself; undefined when there is nothing to set up. */
  configureLevel?(deps: Pick<ProviderDeps, "config" | "secrets" | "stateDir" | "digests"> & { homestakFiles?: HomestakNodeFiles }): ConfigureLevel | undefined;
  /** What such a level installs first when its image lacks it (pve: Proxmox VE itself, a step that reboots). */
  systemInstall?(config: HsdConfig): SystemInstall | undefined;
}

export const PROVIDERS: Readonly<Record<ProviderName, ProviderEntry>> = Object.freeze({
  local: {
    config: { name: "local", options: LOCAL_OPTIONS },
    build: (d, o) => new LocalProvider({
      parentRoot: d.config.root, hsdCommand: d.hsdCommand, isolation: isolationOf(o), levelPath: d.levelPath,
      netns: d.isRoot ? levelNetnsOps({ subnetBase: d.config.nest.subnetBase, log: d.log }) : null,
      shutdownMs: d.config.timeouts.shutdownMs, log: d.log.child({ provider: "local" }),
      ...(d.childScopes ? { scopePrefix: systemdScopePrefix } : {}),
    }),
  },
  pve: {
    config: PVE_CONFIG,
    build: (d) => lazyPveProvider({
      config: d.config, secrets: d.secrets, stateDir: d.stateDir, publicKey: d.publicKey, userKeyPath: d.userKeyPath,
      log: d.log.child({ provider: "pve" }), digests: d.digests,
    }),
    // A level that is itself a PVE node (its parent built it with the pve provider) sets up its own API.
    configureLevel: (d) => (d.config.parent && pveConfigOf(d.config) ? pveConfigure(d) : undefined),
    systemInstall: pveSystemInstall,
  },
});

/** What each provider owns of hsd.yaml, for the loader. */
export const PROVIDER_CONFIGS: readonly ProviderConfigSpec[] = Object.freeze(PROVIDER_NAMES.map((n) => PROVIDERS[n].config));

const optionSpecs = (name: ProviderName): Readonly<Record<string, ProviderOptionSpec>> => PROVIDERS[name].config.options ?? {};

/**
 * A request's options, checked (each must be an option some provider takes,
 * with one of its values) and completed with this level's defaults for
 * `provider`'s own options (hsd.yaml nest.<option>). The bag then travels
 * unread (engine, journal, a child's request); only `provider` sees its part.
 */
export function providerOptions(config: HsdConfig, provider: ProviderName, requested: ProviderOptions): ProviderOptions {
  for (const [k, v] of Object.entries(requested)) {
    const spec = PROVIDER_NAMES.map((n) => optionSpecs(n)[k]).find((o) => o !== undefined);
    if (!spec) throw new InvalidArgumentError(`unknown provider option ${JSON.stringify(k.slice(0, 32))}`, { details: { field: k } });
    if (!spec.values.includes(v)) {
      throw new InvalidArgumentError(`unknown ${k} ${JSON.stringify(v.slice(0, 32))} (expected ${spec.values.join(" or ")})`, { details: { field: k } });
    }
  }
  const out: Record<string, string> = { ...requested };
  const defaults = config.providers[provider]?.options ?? {};
  for (const [k, spec] of Object.entries(optionSpecs(provider))) out[k] = requested[k] ?? defaults[k] ?? spec.default;
  return Object.freeze(out);
}

/** The providers a level builds with: one per provider and distinct own options, each given only its own options. */
export function providerCache(deps: ProviderDeps): (name: ProviderName, options: ProviderOptions) => Provider {
  const made = new Map<string, Provider>();
  return (name, options) => {
    const own: Record<string, string> = {};
    for (const k of Object.keys(optionSpecs(name)).sort()) if (options[k] !== undefined) own[k] = options[k];
    const key = JSON.stringify([name, own]);
    let p = made.get(key);
    if (!p) made.set(key, p = PROVIDERS[name].build(deps, Object.freeze(own)));
    return p;
  };
}
