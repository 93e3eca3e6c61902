// Reads the images: and image_dir keys of hsd.yaml (multi-error, through the
// ConfigReader) and writes them back for a child: the parent passes down the
// names (and known sha256s) of the images the child must fetch from it.
// Imported by: src/config, src/ssh, src/providers.

import { isAbsolute, join, resolve } from "node:path";
import type { ConfigReader, Raw } from "./config-reader.js";
import { DEFAULTS, type HsdConfig, type ImageEntry } from "./config.js";

/** An image name is a file stem in homestak's iso directory, and an exec argument: no slash, no dots-only. */
export const IMAGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$/;
export const MAX_IMAGE_NAME = 64;
const SHA256_RE = /^[0-9a-f]{64}$/;

export function isImageName(name: string): boolean {
  return name.length <= MAX_IMAGE_NAME && IMAGE_NAME_RE.test(name);
}

/** images: { name: path | { path?, sha256?, size? } }, image_dir, ssh.max_image_transfers. */
export function parseImages(r: ConfigReader, top: Raw, root: string, maxTransfersRaw: unknown): HsdConfig["images"] {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(root, p));
  const dir = abs(r.str(top.image_dir, ["image_dir"], DEFAULTS.imageDir));
  const raw = r.map(top.images, ["images"], Object.keys((top.images as Raw | null) ?? {}));
  const entries: Record<string, ImageEntry> = {};
  for (const [name, v] of Object.entries(raw)) {
    if (!isImageName(name)) { r.fail(["images", name], "invalid image name (letters, digits, - _ and inner dots; at most 64)"); continue; }
    const def = join(dir, `${name}.img`);
    if (typeof v === "string") { entries[name] = Object.freeze({ path: abs(v), sha256: "" }); continue; }
    const e = r.map(v, ["images", name], ["path", "sha256", "size"]);
    const sha = r.str(e.sha256, ["images", name, "sha256"], "", /^[0-9A-Fa-f]{64}$/).toLowerCase();
    const size = r.int(e.size, ["images", name, "size"], 0, 1, Number.MAX_SAFE_INTEGER);
    entries[name] = Object.freeze({
      path: abs(r.str(e.path, ["images", name, "path"], def)), sha256: SHA256_RE.test(sha) ? sha : "", ...(size > 0 ? { size } : {}),
    });
  }
  return Object.freeze({
    dir,
    entries: Object.freeze(entries),
    maxTransfers: r.int(maxTransfersRaw, ["ssh", "max_image_transfers"], DEFAULTS.maxImageTransfers, 1, 64),
  });
}

/** images: keys as written back (whole document). */
export function imagesToYaml(images: HsdConfig["images"]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, e] of Object.entries(images.entries)) out[name] = { path: e.path, ...known(e.sha256, e.size) };
  return out;
}

const known = (sha256: string, size: number | undefined) => ({ ...(sha256 ? { sha256 } : {}), ...(sha256 && size ? { size } : {}) });

/**
 * What a child is told about images: the names its parent serves (`only`: just
 * those, the images a manifest child's subtree uses; absent: all of them), with
 * the sha256 and size when the parent knows them (`digests`: what it hashed of
 * its own files; a configured sha256 wins, and another digest than it says
 * nothing). No path: the child keeps them in its own image_dir.
 */
export function imagesForChild(
  images: HsdConfig["images"], only?: ReadonlySet<string>, digests?: Readonly<Record<string, { sha256: string; size: number }>>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, e] of Object.entries(images.entries)) {
    if (only && !only.has(name)) continue;
    const d = digests?.[name];
    const sha256 = e.sha256 || d?.sha256 || "";
    out[name] = known(sha256, d && d.sha256 === sha256 ? d.size : e.size);
  }
  return out;
}
