// Loads a manifest the way level 0 sees it: `-M NAME` is site-config's
// manifests/NAME.yaml, `--manifest FILE` any file; both are checked against
// that site-config's defs/manifest.schema.json, presets/ and specs/, and the
// image names the level can build from. Reads files only.
// Imported by: src/daemon.

import { readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { parse } from "yaml";
import { ManifestInvalidError } from "../domain/errors.js";
import type { HsdConfig } from "../config/config.js";
import { readTextIfExists } from "../util/read-if-exists.js";
import { validateManifest, type Manifest, type Preset } from "./manifest.js";

/** homestak's packer images, used when the level's config names none. */
export const HOMESTAK_IMAGES: readonly string[] = ["debian-12", "debian-13", "pve-9"];

/**
 * The images a manifest's nodes may name: level 0's images: (what it can make
 * nodes from and pass down). A level 0 with no images: at all (the demo; a PVE
 * level cloning every child from the operator's pve.template) accepts
 * homestak's own image names, which then name nothing hsd makes.
 */
export function manifestImages(config: Pick<HsdConfig, "images">): readonly string[] {
  const names = Object.keys(config.images.entries);
  return names.length > 0 ? names : HOMESTAK_IMAGES;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface ManifestRequest {
  /** site-config's manifests/<name>.yaml */
  readonly name?: string;
  /** A manifest's text and the file it came from (hsctl --manifest FILE). */
  readonly text?: string;
  readonly file?: string;
}

export class ManifestSource {
  constructor(private readonly d: { siteConfigDir: string; images: () => readonly string[]; ready?: () => Promise<void> }) {}

  async load(req: ManifestRequest): Promise<Manifest> {
    await this.d.ready?.().catch(() => undefined); // a missing checkout is reported below, file by file
    const dir = this.d.siteConfigDir;
    let text = req.text;
    let file = req.file || "(manifest)";
    if (req.name) {
      if (!NAME.test(req.name)) throw invalid(req.name, "", "name", "not a manifest name");
      file = join(dir, "manifests", `${req.name}.yaml`);
      text = await readTextIfExists(file);
      if (text === undefined) {
        const known = (await yamlNames(join(dir, "manifests"))).join(", ") || "none";
        throw invalid(file, "", "", `no manifest ${req.name} in site-config (manifests/: ${known})`);
      }
    }
    if (text === undefined) throw invalid(file, "", "", "no manifest given");
    const schemaFile = join(dir, "defs", "manifest.schema.json");
    const schemaText = await readTextIfExists(schemaFile);
    if (schemaText === undefined) throw invalid(schemaFile, "", "", "site-config has no defs/manifest.schema.json to check the manifest against");
    let schema: object;
    try { schema = JSON.parse(schemaText) as object; } catch { throw invalid(schemaFile, "", "", "not valid JSON"); }
    const presets: Record<string, Preset> = {};
    for (const p of await yamlNames(join(dir, "presets"))) {
      const v = parse(await readFile(join(dir, "presets", `${p}.yaml`), "utf8")) as Partial<Preset> | null;
      if (v && [v.cores, v.memory, v.disk].every((x) => Number.isInteger(x) && (x as number) > 0)) presets[p] = v as Preset;
    }
    return validateManifest(text, file, { schema, presets, specs: await yamlNames(join(dir, "specs")), images: this.d.images() });
  }
}

function invalid(file: string, node: string, field: string, message: string): ManifestInvalidError {
  return new ManifestInvalidError(`${file}: ${message}`, { details: { file, errors: [{ file, node, field, message }] } });
}

async function yamlNames(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.filter((n) => n.endsWith(".yaml")).map((n) => basename(n, ".yaml")).sort();
}
