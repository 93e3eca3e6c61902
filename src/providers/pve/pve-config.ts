// The pve provider's share of hsd.yaml: its `pve:` section (read and checked
// here, through the loader's reader; written back as the same keys) and the
// typed view the provider works with. The registry hands the spec to the
// loader; the config folder knows no provider.
// Imported by: src/providers.

import type { HsdConfig, ProviderConfigSpec } from "../../config/config.js";
import type { ConfigReader } from "../../config/config-reader.js";
import { IMAGE_NAME_RE } from "../../config/images-config.js";

/** The image a child VM is made from when pve.image is unset. */
export const DEFAULT_PVE_IMAGE = "pve-9";

/** The pve: section as the provider uses it. */
export interface PveConfig {
  /** The image (a name under images:) a child VM is made from. */
  readonly image: string;
  /**
   * pve.image given as a list: the images the levels below the children are
   * made from, top down (the grandchildren from the first, ...; the last goes
   * on for deeper levels). Empty or absent: pve.image all the way down.
   */
  readonly imagesBelow?: readonly string[];
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

const KEYS = ["image", "url", "node", "token_id", "fingerprint", "storage", "snippet_storage", "template", "bridge", "cores", "memory", "bundle"];

function readSection(r: ConfigReader, raw: unknown): Record<string, unknown> {
  const p = r.map(raw, ["pve"], KEYS);
  return {
    image: readImage(r, p.image),
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

/**
 * pve.image: one name (every level below is made from it), or a list, one per
 * depth below this level (docs/proxmox.md, "An image per depth"). Kept as
 * written: a one-entry list is the single name.
 */
function readImage(r: ConfigReader, v: unknown): string | string[] {
  if (!Array.isArray(v)) return r.str(v, ["pve", "image"], DEFAULT_PVE_IMAGE, IMAGE_NAME_RE);
  if (v.length === 0) {
    r.fail(["pve", "image"], "must name at least one image");
    return DEFAULT_PVE_IMAGE;
  }
  const names = v.map((x, i) => r.str(x, ["pve", "image", i], DEFAULT_PVE_IMAGE, IMAGE_NAME_RE));
  return names.length === 1 ? names[0]! : names;
}

/** pve.image as read: the first entry (this level's children) and the rest (the levels below them). */
function imageList(image: unknown): string[] {
  return Array.isArray(image) ? image.map(String) : [String(image)];
}

/**
 * The child's pve.image as hsd.yaml holds it: the list minus its head (a single
 * name when one is left); a single name stays as it is.
 */
export function childImageValue(c: Pick<PveConfig, "image" | "imagesBelow">): string | string[] {
  const below = c.imagesBelow ?? [];
  return below.length === 0 ? c.image : below.length === 1 ? below[0]! : [...below];
}

/** With images configured, a PVE child is made from one of them (without, the operator's pve.template as before). */
function checkImage(r: ConfigReader, section: Readonly<Record<string, unknown>>, config: HsdConfig): void {
  const names = Object.keys(config.images.entries);
  if (names.length === 0) return;
  const list = imageList(section.image);
  for (const [i, name] of list.entries()) {
    if (!Object.hasOwn(config.images.entries, name)) {
      r.fail(Array.isArray(section.image) ? ["pve", "image", i] : ["pve", "image"], `names no image under images: (have: ${names.join(", ")})`);
    }
  }
}

export const PVE_CONFIG: ProviderConfigSpec = Object.freeze({
  name: "pve",
  section: { key: "pve", read: readSection, required: true, check: checkImage },
});

/** This level's pve: section, typed; null when hsd.yaml has none. */
export function pveConfigOf(config: HsdConfig): PveConfig | null {
  const s = config.providers.pve?.section;
  if (!s) return null;
  const [image, ...imagesBelow] = imageList(s.image);
  return Object.freeze({
    image: image!, imagesBelow, url: s.url as string, node: s.node as string, tokenId: s.token_id as string, fingerprint: s.fingerprint as string,
    storage: s.storage as string, snippetStorage: s.snippet_storage as string, template: s.template as number,
    bridge: s.bridge as string, cores: s.cores as number, memoryMiB: s.memory as number, bundle: s.bundle as string,
  });
}
