// The pve provider's share of hsd.yaml: its `pve:` section (read and checked
// here, through the loader's reader; written back as the same keys) and the
// typed view the provider works with. The registry hands the spec to the
// loader; the config folder knows no provider.
// Imported by: src/providers.

import type { HsdConfig, ProviderConfigSpec } from "../../config/config.js";
import type { ConfigReader } from "../../config/config-reader.js";

/** The pve: section as the provider uses it. */
export interface PveConfig {
  /** https://HOST:8006 (no /api2/json). */
  readonly url: string;
  readonly node: string;
  /** USER@REALM!TOKENID; the secret itself lives in secrets.yaml under pve.token_secret. */
  readonly tokenId: string;
  /** SHA256 fingerprint of the API certificate ("AA:BB:..."); pinned. Empty: learn on first use is refused. */
  readonly fingerprint: string;
  readonly storage: string;
  readonly snippetStorage: string;
  readonly template: number;
  readonly bridge: string;
  readonly cores: number;
  readonly memoryMiB: number;
  /** The hsd bundle installed into child VMs (scripts/bundle.mjs output); "" = <package root>/hsd-bundle.tar.gz. */
  readonly bundle?: string;
}

const KEYS = ["url", "node", "token_id", "fingerprint", "storage", "snippet_storage", "template", "bridge", "cores", "memory", "bundle"];

function readSection(r: ConfigReader, raw: unknown): Record<string, unknown> {
  const p = r.map(raw, ["pve"], KEYS);
  return {
    url: r.str(p.url, ["pve", "url"], "https://127.0.0.1:8006", /^https:\/\/[^/\s]+$/),
    node: r.str(p.node, ["pve", "node"], "pve", /^[A-Za-z0-9.-]+$/),
    token_id: r.str(p.token_id, ["pve", "token_id"], "root@pam!hsd", /^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9.\-_]+$/),
    fingerprint: r.str(p.fingerprint, ["pve", "fingerprint"], "", /^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$|^$/),
    storage: r.str(p.storage, ["pve", "storage"], "local-lvm"),
    snippet_storage: r.str(p.snippet_storage, ["pve", "snippet_storage"], "local"),
    template: r.int(p.template, ["pve", "template"], 9000, 100, 999_999_999),
    bridge: r.str(p.bridge, ["pve", "bridge"], "vmbr0", /^[A-Za-z0-9_.-]{1,15}$/),
    cores: r.int(p.cores, ["pve", "cores"], 4, 1, 512),
    memory: r.int(p.memory, ["pve", "memory"], 8192, 256, 4_194_304),
    bundle: r.str(p.bundle, ["pve", "bundle"], "", /^(\/.*)?$/),
  };
}

export const PVE_CONFIG: ProviderConfigSpec = Object.freeze({
  name: "pve",
  section: { key: "pve", read: readSection, required: true },
});

/** This level's pve: section, typed; null when hsd.yaml has none. */
export function pveConfigOf(config: HsdConfig): PveConfig | null {
  const s = config.providers.pve?.section;
  if (!s) return null;
  return Object.freeze({
    url: s.url as string, node: s.node as string, tokenId: s.token_id as string, fingerprint: s.fingerprint as string,
    storage: s.storage as string, snippetStorage: s.snippet_storage as string, template: s.template as number,
    bridge: s.bridge as string, cores: s.cores as number, memoryMiB: s.memory as number, bundle: s.bundle as string,
  });
}
