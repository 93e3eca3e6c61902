// The template a PVE level clones its children from, made from an image this
// level holds (images: in hsd.yaml; below level 0, received from the parent):
// create the VM with its disk imported from the image (import-from), agent on,
// serial console, cloud-init drive, boot order, then turn it into a template.
// A template already at the vmid that was made from the same image (same
// sha256) is kept; anything else there is never touched.
// Imported by: src/providers/pve.
//
// Why an `import` volume and not the iso file: with an API token PVE refuses an
// absolute import-from path (root@pam with a password only) and iso content is
// no import source; a dir storage with content `import` is (PVE 8.2+). The
// image is hard-linked there (copied across filesystems), never downloaded.

import { copyFile, link, mkdir, open, stat } from "node:fs/promises";
import { join } from "node:path";
import { PreflightError } from "../../domain/errors.js";
import type { PveClient, WaitTaskOptions } from "./pve-client.js";
import { childPreflightSlot, templateMarker, templateSlot, type TemplateImage, type TemplateReads, type TemplateSlot } from "./child-preflight.js";
import type { CheckResult } from "../../domain/checks.js";
import type { CommandRunner } from "../../util/command-runner.js";
import { STEP_HINTS, VALUE_HINTS } from "../../domain/hints.js";
import { storageFields, type StorageAvail } from "./preflight.js";

export type { TemplateImage } from "./child-preflight.js";

export interface EnsureTemplateOptions {
  readonly client: PveClient;
  readonly node: string;
  readonly vmid: number;
  readonly image: TemplateImage;
  /** Where the disk and the cloud-init drive go (pve.storage). */
  readonly storage: string;
  readonly bridge: string;
  /** A dir storage that can hold `import` content (its path on this node comes from the API). */
  readonly importStorage: string;
  readonly task: WaitTaskOptions;
  readonly signal?: AbortSignal;
  readonly log: (message: string) => void;
  /** Called once PVE has the template's work in hand (its create task started), or there is none to do (kept). */
  readonly onUnderWay?: () => void;
  /** The import storage's directory as prepareImport() began it ahead (while the image was still on its way); else done here. */
  readonly importDir?: Promise<string>;
}

/**
 * The level's own checks (child-preflight.ts), then the template when they
 * pass: every outcome as a check, the template's last ("repaired" when made).
 */
export async function buildTemplate(o: EnsureTemplateOptions & {
  readonly commands: CommandRunner; readonly signal: AbortSignal;
  /** pvesm's answer for o.storage, begun by the caller (see childPreflight). */
  readonly storageAvail?: Promise<StorageAvail>;
  /** The checks' API reads, begun before the image was in (beginTemplateReads). */
  readonly reads?: TemplateReads;
}): Promise<CheckResult[]> {
  const { checks, slot } = await childPreflightSlot({
    client: o.client, commands: o.commands, node: o.node, vmid: o.vmid, image: o.image, storage: o.storage, signal: o.signal,
    ...(o.storageAvail ? { storageAvail: o.storageAvail } : {}), ...(o.reads ? { reads: o.reads } : {}),
  });
  if (checks.some((c) => c.result === "failed")) return checks;
  // The slot as the checks just read it: a VM made at the vmid meanwhile makes PVE refuse the create.
  const r = await ensureTemplate(o, slot);
  return [...checks, {
    name: "template", result: r === "created" ? "repaired" : "ok",
    detail: r === "created" ? `made template ${o.vmid} from image ${o.image.name}` : `template ${o.vmid} from image ${o.image.name} is in place`,
  }];
}

/** The template VM's name: how a list of the node's VMs points at it before its description is read. */
export function templateVmName(image: string): string {
  return `hsd-${image}`.replace(/[^A-Za-z0-9.-]/g, "-").slice(0, 63);
}

/** `known`: the vmid's slot as the caller just read it; otherwise it is read here. */
export async function ensureTemplate(o: EnsureTemplateOptions, known?: TemplateSlot): Promise<"kept" | "created"> {
  const { client, node, vmid, signal } = o;
  const slot = known ?? await templateSlot(client, node, vmid, o.image, signal);
  if (slot.state === "match") {
    o.log(`template ${vmid} from image ${o.image.name} is in place; kept`);
    o.onUnderWay?.();
    return "kept";
  }
  if (slot.state === "other") {
    throw new PreflightError(`${slot.detail}; hsd will not touch it`, {
      details: { vmid, image: o.image.name, hint: VALUE_HINTS.templateSlot(vmid) },
    });
  }
  const dir = await (o.importDir ?? prepareImport(o));
  const file = await linkForImport(o, dir);
  o.log(`creating template ${vmid} from image ${o.image.name} (${o.importStorage}:import/${file})`);
  const create = await client.api("POST /nodes/{node}/qemu", {
    node, vmid, name: templateVmName(o.image.name),
    description: templateMarker(o.image), ostype: "l26", memory: "2048", cores: 1, scsihw: "virtio-scsi-pci",
    scsi0: `${o.storage}:0,import-from=${o.importStorage}:import/${file}`, ide2: `${o.storage}:cloudinit`,
    agent: "1", serial0: "socket", vga: "serial0", boot: "order=scsi0", net0: `virtio,bridge=${o.bridge}`,
  }, { signal });
  o.onUnderWay?.();
  await client.waitTask(create, o.task);
  const tmpl = await client.api("POST /nodes/{node}/qemu/{vmid}/template", { node, vmid }, { signal });
  await client.waitTask(tmpl, o.task);
  return "created";
}

/**
 * Adds `import` to the storage's content list (the list replaces the old one:
 * keep what is there); returns the storage's directory on this node. Needs
 * no image: a level begins it while its image is still on its way.
 */
export async function prepareImport(o: Pick<EnsureTemplateOptions, "client" | "importStorage" | "signal" | "log">): Promise<string> {
  const id = o.importStorage;
  const st = storageFields(await o.client.api("GET /storage/{storage}", { storage: id }, { signal: o.signal }));
  if (!st.path) {
    throw new PreflightError(`storage ${id} has no directory for import volumes`, { details: { storage: id, hint: STEP_HINTS.importStorageNotDir } });
  }
  const content = st.content.split(",").filter(Boolean);
  if (content.includes("import")) return st.path;
  o.log(`enabling content 'import' on storage ${id}`);
  await o.client.api("PUT /storage/{storage}", {
    storage: id, content: [...content, "import"].join(","), ...(st.digest ? { digest: st.digest } : {}),
  }, { signal: o.signal });
  return st.path;
}

/** The image under <storage>/import/ with the extension PVE imports by (its format's, from the magic). */
async function linkForImport(o: EnsureTemplateOptions, storagePath: string): Promise<string> {
  const fh = await open(o.image.path, "r");
  const magic = Buffer.alloc(4);
  try { await fh.read(magic, 0, 4, 0); } finally { await fh.close(); }
  const ext = magic.equals(Buffer.from([0x51, 0x46, 0x49, 0xfb])) ? "qcow2" : "raw";
  const file = `${o.image.name}.${ext}`;
  const dir = join(storagePath, "import");
  const dest = join(dir, file);
  await mkdir(dir, { recursive: true });
  const [src, have] = await Promise.all([stat(o.image.path), stat(dest).catch(() => undefined)]);
  if (have && have.ino === src.ino && have.dev === src.dev) return file;
  if (have) throw new PreflightError(`${dest} exists and is not image ${o.image.name}`, { details: { path: dest } });
  await link(o.image.path, dest).catch(async (e: NodeJS.ErrnoException) => {
    if (e.code !== "EXDEV") throw e;
    await copyFile(o.image.path, dest);
  });
  return file;
}
