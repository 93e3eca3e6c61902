// A PVE level's checks before it makes its template (a child in configure,
// level 0 in preflight): the template vmid is free or already this image's
// template (the marker rule), the node can import (PVE 8.2+), and pve.storage
// has room for the template's disk plus a clone (images: checked at sync).
// Imported by: src/providers/pve.

import { open, stat } from "node:fs/promises";
import type { CheckResult } from "../../domain/checks.js";
import { STEP_HINTS, VALUE_HINTS } from "../../domain/hints.js";
import type { CommandRunner } from "../../util/command-runner.js";
import { isPveError, type PveClient } from "./pve-client.js";
import { storageAvail, type StorageAvail } from "./preflight.js";
import { canImportImages } from "./pve-version.js";

export interface TemplateImage {
  readonly name: string;
  /** The image file on this node (e.g. /var/lib/vz/template/iso/pve-9.img). */
  readonly path: string;
  readonly sha256: string;
}

/** The template's description names the image it was made from: how a match is recognised. */
export function templateMarker(image: TemplateImage): string {
  return `hsd-image=${image.name}@${image.sha256}`;
}

export type TemplateSlot =
  | { readonly state: "free" }
  | { readonly state: "match" }
  | { readonly state: "other"; readonly detail: string };

/** What the vmid holds: nothing, this image's template, or anything else (never to be touched). */
export async function templateSlot(client: PveClient, node: string, vmid: number, image: TemplateImage, signal?: AbortSignal): Promise<TemplateSlot> {
  const cfg = await client.api("GET /nodes/{node}/qemu/{vmid}/config", { node, vmid }, { signal }).catch((e: unknown) => {
    if (isPveError(e, 500, /does not exist/)) return undefined;
    throw e;
  }) as Record<string, unknown> | undefined;
  if (!cfg) return { state: "free" };
  const isTemplate = String(cfg.template ?? "") === "1";
  if (isTemplate && String(cfg.description ?? "").includes(templateMarker(image))) return { state: "match" };
  const what = isTemplate ? `a template not made from image ${image.name}@${image.sha256.slice(0, 12)}` : "a VM, not a template";
  return { state: "other", detail: `VM ${vmid} (${String(cfg.name ?? "unnamed")}) is ${what}` };
}

/** The disk a VM made from this image gets: a qcow2's virtual size (its header), else the file's size. */
export async function imageDiskBytes(path: string): Promise<number> {
  const fh = await open(path, "r");
  try {
    const head = Buffer.alloc(32);
    const { bytesRead } = await fh.read(head, 0, 32, 0);
    if (bytesRead === 32 && head.readUInt32BE(0) === 0x514649fb) return Number(head.readBigUInt64BE(24));
    return (await stat(path)).size;
  } finally {
    await fh.close();
  }
}

export interface ChildPreflightDeps {
  readonly client: PveClient;
  readonly commands: CommandRunner;
  readonly node: string;
  /** pve.template: where this level's template goes. */
  readonly vmid: number;
  readonly image: TemplateImage;
  /** pve.storage: the template's disk and its clones' disks. */
  readonly storage: string;
  readonly signal: AbortSignal;
  /** pve.storage's free space (storageAvail) when the caller started asking earlier: begun first, awaited last. */
  readonly storageAvail?: Promise<StorageAvail>;
  /** The API's answers, asked before the image was in (beginTemplateReads); used when they were asked for this image. */
  readonly reads?: TemplateReads;
}

/**
 * What the checks ask the API that needs none of the image file, begun while
 * it is still on its way. Not the storage's room: an image landing on the
 * same storage would leave an earlier answer too high.
 */
export interface TemplateReads {
  /** The image as it will be: its sha256 from config (the slot's marker). */
  readonly image: TemplateImage;
  readonly version: Promise<{ version?: unknown }>;
  readonly slot: Promise<TemplateSlot>;
}

/** Asks the API what childPreflightSlot will want (no answer is awaited here, and none rejects unhandled). */
export function beginTemplateReads(d: Pick<ChildPreflightDeps, "client" | "node" | "vmid" | "image" | "signal"> & {
  /** GET /version's answer when the caller has just had it (a set-up's or preflight's API check): not asked again. */
  readonly version?: string;
  /** The slot as the caller has just read it (level 0's preflight found the vmid free): not read again. */
  readonly slot?: TemplateSlot;
}): TemplateReads {
  const reads: TemplateReads = {
    image: d.image,
    version: d.version ? Promise.resolve({ version: d.version }) : d.client.api("GET /version", {}, { signal: d.signal }) as Promise<{ version?: unknown }>,
    slot: d.slot ? Promise.resolve(d.slot) : templateSlot(d.client, d.node, d.vmid, d.image, d.signal),
  };
  reads.version.catch(() => {});
  reads.slot.catch(() => {});
  return reads;
}

const KiB = 1024;
const gib = (kib: number) => (kib / KiB / KiB).toFixed(1);

export async function childPreflight(d: ChildPreflightDeps): Promise<CheckResult[]> {
  return (await childPreflightSlot(d)).checks;
}

/** childPreflight, and the slot as it read it (ensureTemplate need not ask again). */
export async function childPreflightSlot(d: ChildPreflightDeps): Promise<{ checks: CheckResult[]; slot: TemplateSlot }> {
  const out: CheckResult[] = [];
  // Reads begun for another image (another sha256) are not this one's answers.
  const early = d.reads && d.reads.image.sha256 === d.image.sha256 && d.reads.image.name === d.image.name ? d.reads : undefined;
  // The storage's free space and the image's header are read while the API answers about the slot.
  const room = Promise.all([imageDiskBytes(d.image.path), d.storageAvail ?? storageAvail(d.client, d.commands, d.node, d.storage, d.signal)]);
  room.catch(() => {}); // awaited below; a rejection before then is not unhandled
  // The version matters only for a free slot (the common case, a fresh level): one read, asked beside the slot's, not after it.
  const version = early?.version ?? d.client.api("GET /version", {}, { signal: d.signal });
  version.catch(() => {}); // awaited only for a free slot
  const slot = await (early?.slot ?? templateSlot(d.client, d.node, d.vmid, d.image, d.signal));
  if (slot.state === "other") {
    out.push({ name: "template-slot", result: "failed", detail: `${slot.detail}; hsd will not touch it`, hint: VALUE_HINTS.templateSlot(d.vmid) });
  } else if (slot.state === "free" && !canImportImages(String((await version).version))) {
    out.push({ name: "template-slot", result: "failed", detail: `VM ${d.vmid} is free, but this PVE has no \`import\` content type (8.2 or later) to make the template of image ${d.image.name} with`,
      hint: STEP_HINTS.noImportContent });
  } else {
    out.push({ name: "template-slot", result: "ok", detail: slot.state === "free"
      ? `VM ${d.vmid} is free for the template of image ${d.image.name}`
      : `VM ${d.vmid} already is the template of image ${d.image.name}; kept` });
  }
  // A linked clone shares the template's base volume and grows up to the disk's size: one disk for
  // the template (unless it is already there) and one for a clone is what this level needs.
  const [diskBytes, st] = await room;
  const diskKiB = Math.ceil(diskBytes / KiB);
  const needKiB = diskKiB * (slot.state === "match" ? 1 : 2);
  const avail = "kib" in st ? st.kib : 0;
  if ("error" in st) {
    out.push({ name: "storage-room", result: "failed", detail: st.error, hint: VALUE_HINTS.storageStatus(d.storage) });
  } else if (avail < needKiB) {
    out.push({ name: "storage-room", result: "failed",
      detail: `storage ${d.storage} has ${gib(avail)} GiB free; the template of ${d.image.name} and a clone need ${gib(needKiB)} GiB`, hint: STEP_HINTS.lowDisk });
  } else {
    out.push({ name: "storage-room", result: "ok", detail: `storage ${d.storage} has ${gib(avail)} GiB free; ${gib(needKiB)} GiB needed for the template and a clone` });
  }
  return { checks: out, slot };
}
