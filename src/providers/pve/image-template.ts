// Which template a PVE level clones a child from: one template per image the
// level holds, found or made in a block of vmids that starts at pve.template.
// The rule (docs/proxmox.md, "Templates per image"):
// - the template of image X is a template VM in [pve.template, pve.template +
//   TEMPLATE_SLOTS) named hsd-X whose description carries X's marker
//   (hsd-image=X@<sha256>): the lowest such vmid is used as it is;
// - otherwise X's template is made (ensure-template.ts) at the lowest vmid of
//   the block that no VM has;
// - any other VM in the block (the operator's template, an hsd template of an
//   older copy of X, anything else) is skipped and never touched.
// Imported by: src/providers/pve.

import { PreflightError } from "../../domain/errors.js";
import { VALUE_HINTS } from "../../domain/hints.js";
import { ensureTemplate, templateVmName, type EnsureTemplateOptions } from "./ensure-template.js";
import { templateMarker, type TemplateImage } from "./child-preflight.js";

/** How many vmids from pve.template on are hsd's template block (9000-9099 by default). */
export const TEMPLATE_SLOTS = 100;

export interface TemplateForImageOptions extends Omit<EnsureTemplateOptions, "vmid"> {
  /** pve.template: the block's first vmid. */
  readonly base: number;
}

/** The vmid of `image`'s template on the node, made there when it has none. */
export async function templateForImage(o: TemplateForImageOptions): Promise<{ vmid: number; made: "kept" | "created" }> {
  const { client, node, signal, image } = o;
  const end = o.base + TEMPLATE_SLOTS;
  const vms = await client.api("GET /nodes/{node}/qemu", { node }, { signal });
  const inBlock = vms.filter((v) => v.vmid >= o.base && v.vmid < end).sort((a, b) => a.vmid - b.vmid);
  const marker = templateMarker(image);
  for (const v of inBlock) {
    // The list's template flag and name narrow it down; the description (config only) decides.
    if (!isTrue(v.template) || v.name !== templateVmName(image.name)) continue;
    const cfg = await client.api("GET /nodes/{node}/qemu/{vmid}/config", { node, vmid: v.vmid }, { signal }) as Record<string, unknown>;
    if (String(cfg.description ?? "").includes(marker)) {
      o.log(`template ${v.vmid} from image ${image.name} is in place; kept`);
      return { vmid: v.vmid, made: "kept" };
    }
    o.log(`VM ${v.vmid} is an hsd template of another copy of ${image.name}; left as it is`);
  }
  const taken = new Set(inBlock.map((v) => v.vmid));
  let vmid = o.base;
  while (vmid < end && taken.has(vmid)) vmid++;
  if (vmid >= end) {
    throw new PreflightError(`no free vmid for image ${image.name}'s template in ${o.base}-${end - 1}: every one is a VM`, {
      details: { image: image.name, from: o.base, to: end - 1, hint: VALUE_HINTS.templateBlockFull(o.base, end - 1) },
    });
  }
  await ensureTemplate({ ...o, vmid });
  return { vmid, made: "created" };
}

/** The list's `template` is a boolean in the schema; PVE sends 1 (or omits it). */
function isTrue(v: unknown): boolean {
  return v === true || v === 1 || v === "1";
}

/**
 * Template lookups on one node, one at a time: siblings provisioned at once
 * from the same image share one template instead of racing to make two, and
 * two images never pick the same free vmid.
 */
export class TemplateLocks {
  private readonly running = new Map<string, Promise<number>>();
  private chain: Promise<unknown> = Promise.resolve();

  get(image: TemplateImage, make: () => Promise<number>): Promise<number> {
    const key = `${image.name}@${image.sha256}`;
    let p = this.running.get(key);
    if (!p) {
      p = this.chain.catch(() => undefined).then(make).finally(() => this.running.delete(key));
      this.chain = p;
      this.running.set(key, p);
    }
    return p;
  }
}

/** The images a level holds (images: in hsd.yaml) as the provider sees them. */
export interface HeldImages {
  readonly entries: Readonly<Record<string, { readonly path: string }>>;
  /** The file's sha256 (cached by size and mtime: images/image-digest.ts). */
  readonly sha256: (path: string) => Promise<string>;
}

export interface PickTemplateOptions extends Omit<TemplateForImageOptions, "image" | "base"> {
  readonly held: HeldImages | undefined;
  readonly config: { readonly image: string; readonly template: number };
  readonly locks: TemplateLocks;
}

/**
 * The template a child made from `image` is cloned from. pve.template is
 * pve.image's template (the operator's at level 0; below, the one this level's
 * configure step made from the image its parent sent), so a uniform tree and
 * a node of pve.image clone it as before; so does every child of a level
 * that holds no images at all. Any other image must be one this level holds;
 * its template follows the rule above.
 */
export async function pickTemplate(image: string | undefined, o: PickTemplateOptions): Promise<number> {
  const name = image ?? o.config.image;
  if (name === o.config.image || Object.keys(o.held?.entries ?? {}).length === 0) return o.config.template;
  const entry = o.held && Object.hasOwn(o.held.entries, name) ? o.held.entries[name]! : undefined;
  if (!entry) {
    throw new PreflightError(`this level holds no image ${name} to make a child from`, {
      details: { image: name, held: Object.keys(o.held?.entries ?? {}), hint: VALUE_HINTS.imageNotHeld(name) },
    });
  }
  const img: TemplateImage = { name, path: entry.path, sha256: await o.held!.sha256(entry.path) };
  return o.locks.get(img, async () => (await templateForImage({ ...o, image: img, base: o.config.template })).vmid);
}
