// The typed, frozen hsd configuration and every default in one place.
// load-config.ts builds a HsdConfig from YAML; everything else receives it
// injected and never reads the file or the environment itself.
// Imported by: anyone.

import type { PhaseName } from "../domain/phases.js";
import type { ProviderName, ProviderOptions, ProviderOptionSpec } from "../domain/providers.js";
import type { ConfigReader } from "./config-reader.js";

/** One configure step (configure.steps in hsd.yaml); parsed by homestak-config.ts. */
export interface ConfigureStep {
  /** Unique among the steps; the journal key and what events name. */
  readonly name: string;
  /** argv; never run through a shell unless argv itself is ["sh", "-c", ...]. */
  readonly run: readonly string[];
  /** A repo name (its working tree) or a relative path under the homestak root. */
  readonly cwd: string;
  /** Extra environment (never secrets: those are in config/secrets.yaml). */
  readonly env: Readonly<Record<string, string>>;
  readonly budgetMs: number;
  /** Run as this user ("" = hsd's own); needs root. */
  readonly user: string;
  readonly when: { readonly provider?: ProviderName; readonly minDepth?: number; readonly maxDepth?: number };
}

/** One image a level serves to its children (images: in hsd.yaml). */
export interface ImageEntry {
  /** Absolute file; default <images.dir>/<name>.img. */
  readonly path: string;
  /** Lower-case hex; "" = computed once from the file and cached by size and mtime. */
  readonly sha256: string;
  /**
   * Bytes, as the parent that passed this image down knew it beside its sha256
   * (absent: unknown). With both, a child moves the bytes without asking the
   * parent for the image's header first (fetch-image.ts).
   */
  readonly size?: number;
}

/**
 * What a provider owns of hsd.yaml (src/providers/<name>/, listed by the
 * registry): its request options (read from nest.<option>, the level's
 * defaults) and its own top-level section. The loader reads them through this
 * and the writer writes them back, knowing no provider.
 */
export interface ProviderConfigSpec {
  readonly name: ProviderName;
  readonly options?: Readonly<Record<string, ProviderOptionSpec>>;
  readonly section?: {
    /** Its top-level key (pve). */
    readonly key: string;
    /** Its settings with every default filled in, as hsd.yaml keys (what the writer writes back). */
    read(r: ConfigReader, raw: unknown): Readonly<Record<string, unknown>>;
    /** True when a level whose nest.provider is this one cannot do without the section. */
    readonly required?: boolean;
    /** Checks of the section against the rest of the config (records issues through r); after every other key is read. */
    check?(r: ConfigReader, section: Readonly<Record<string, unknown>>, config: HsdConfig): void;
  };
}

/** One provider's settings at this level. */
export interface ProviderSettings {
  /** Defaults of its request options (nest.<option>). */
  readonly options: ProviderOptions;
  /** Its section as hsd.yaml keys with defaults filled in; null when the file has none. Typed by its provider. */
  readonly section: Readonly<Record<string, unknown>> | null;
  /** Its section's top-level key. */
  readonly key?: string;
}

export interface ParentConfig {
  /** host of the parent's SSH endpoint as reachable from this level. */
  readonly host: string;
  readonly port: number;
  /** Pinned host key of the parent's endpoint, "SHA256:...". */
  readonly hostKeyFingerprint: string;
  /** The parent's public key: authorized here as controller. */
  readonly publicKey: string;
  /**
   * The parent endpoint's host public key ("<type> <base64>"); "" when the parent
   * did not say. When set, its fingerprint is hostKeyFingerprint (checked at load),
   * so OpenSSH can pin it before the level's ssh2 connection has verified it.
   */
  readonly hostKey: string;
}

export interface HsdConfig {
  /** Where the file came from ("<defaults>" when none). */
  readonly source: string;
  /** Everything this level owns lives under root. */
  readonly root: string;
  /** spec and manifest: what a manifest made this level (its node's spec); "" otherwise. */
  readonly level: { readonly name: string; readonly depth: number; readonly spec: string; readonly manifest: string };
  readonly api: { readonly socket: string };
  readonly ssh: {
    readonly host: string;
    /** 0 picks a free port (tests, local children). */
    readonly port: number;
    /**
     * ssh.port was left unset on a user root (port is 0): the endpoint first
     * tries the port it bound last time, so live children still reach it after a restart.
     */
    readonly reuseLastPort: boolean;
    /** The address children are told to use; defaults to host (or 127.0.0.1 for 0.0.0.0). */
    readonly advertiseHost: string;
    readonly maxUploadPacks: number;
    readonly queueTimeoutMs: number;
    /** git upload-pack --timeout, seconds of inactivity. */
    readonly uploadPackTimeoutS: number;
    readonly authFailureDelayMs: number;
  };
  /** Exported repos: name -> operator checkout path (level 0). Empty at level 0 means the demo set. */
  readonly repos: Readonly<Record<string, string>>;
  /** Repo names exported below level 0 (what a child fetches). */
  readonly repoNames: readonly string[];
  readonly secretPatterns: readonly string[];
  readonly parent: ParentConfig | null;
  readonly timeouts: {
    /** TCP/SSH/gRPC connection establishment. At most 30 s, never a command timeout. */
    readonly connectMs: number;
    /** A single remote command or RPC that is not a whole phase. */
    readonly commandMs: number;
    /** Child health wait poll interval (event-driven where possible; this bounds the fallback). */
    readonly healthPollMs: number;
    readonly shutdownMs: number;
  };
  /** Phase budgets in ms; nest 0 means "sum of the child's budgets". */
  readonly budgets: Readonly<Record<PhaseName, number>>;
  readonly nest: {
    readonly provider: ProviderName;
    /** Children built at once per level (width). */
    readonly maxParallel: number;
    readonly maxDepth: number;
    readonly maxWidth: number;
    /** First two octets of the private /30s handed to netns children. */
    readonly subnetBase: string;
  };
  readonly secrets: {
    /** Dotted key paths of this level's secrets passed down to a child. */
    readonly passDown: readonly string[];
  };
  readonly sync: { readonly mode: "manual" | "watch"; readonly debounceMs: number };
  /** Where homestak's working trees live on this level (below level 0) and how repos map to paths. */
  readonly homestak: {
    /** Absolute homestak root ($HOMESTAK_ROOT). */
    readonly root: string;
    /** repo name -> path relative to root. */
    readonly layout: Readonly<Record<string, string>>;
    /**
     * The local user that owns the trees and the site-config files (homestak's
     * tools run as it); null: whoever runs hsd owns them (a --root level).
     */
    readonly user: string | null;
  };
  readonly configure: { readonly steps: readonly ConfigureStep[] };
  /** Each provider's own settings, by name (only providers the loader was given). */
  readonly providers: Readonly<Record<string, ProviderSettings>>;
  readonly images: {
    /** Where this level keeps its images (received ones land here): homestak's iso directory by default. */
    readonly dir: string;
    /** name -> file. Below level 0: what the parent passed down (fetched from it at sync). */
    readonly entries: Readonly<Record<string, ImageEntry>>;
    /** Image transfers this level's endpoint serves at once; the rest queue. */
    readonly maxTransfers: number;
  };
  readonly log: { readonly level: string };
}

export const DEFAULT_REPO_NAMES = Object.freeze([
  "bootstrap", "ansible", "iac-driver", "tofu", "packer", "site-config",
]);

/**
 * Where each homestak repo's working tree goes under the homestak root, as
 * homestak itself lays a host out (iac-driver finds ansible and tofu as its
 * siblings, and the site-config at $HOMESTAK_ROOT/config). The site-config
 * repo is called `config` upstream and `site-config` in hsd's demo set.
 */
export const DEFAULT_LAYOUT: Readonly<Record<string, string>> = Object.freeze({
  bootstrap: "bootstrap",
  config: "config",
  "site-config": "config",
  ansible: "iac/ansible",
  "iac-driver": "iac/iac-driver",
  tofu: "iac/tofu",
  packer: "iac/packer",
});

export const DEFAULT_BUDGETS_MS: Readonly<Record<PhaseName, number>> = Object.freeze({
  preflight: 30_000,
  provision: 120_000,
  boot: 300_000,
  install: 120_000,
  handshake: 30_000,
  sync: 120_000,
  secrets: 30_000,
  configure: 1_200_000,
  nest: 0,
});

/** The hard ceiling on any connect timeout (seed lesson 5). */
export const MAX_CONNECT_MS = 30_000;

export const DEFAULTS = Object.freeze({
  levelName: "l0",
  /** homestak.root relative to the level root when hsd.yaml names none (local levels). */
  homestakDir: "homestak",
  sshHost: "0.0.0.0",
  sshPort: 2222,
  maxUploadPacks: 8,
  queueTimeoutMs: 30_000,
  uploadPackTimeoutS: 60,
  authFailureDelayMs: 200,
  secretPatterns: ["secrets.yaml", "*.key", "id_rsa*", "*.pem"],
  connectMs: 10_000,
  commandMs: 120_000,
  healthPollMs: 50,
  shutdownMs: 4_000,
  provider: "local" as ProviderName,
  maxParallel: 2,
  maxDepth: 8,
  maxWidth: 8,
  subnetBase: "10.231",
  passDown: ["passwords", "ssh_keys", "auth"],
  stepBudgetMs: 600_000,
  syncMode: "manual" as const,
  debounceMs: 300,
  logLevel: "info",
  imageDir: "/var/lib/vz/template/iso",
  maxImageTransfers: 2,
});
