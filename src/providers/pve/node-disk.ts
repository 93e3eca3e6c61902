// A manifest node's disk size on PVE: the clone's boot disk grown to the node's
// `disk` (or its preset's) in GiB, with PUT .../resize and an absolute size, so
// a resumed provision asks for the same thing again and PVE does nothing.
// PVE cannot shrink a disk: a template disk larger than the node's is a clear
// error before any call, not a failed task.
// Imported by: src/providers/pve.

import { ProviderError } from "../../domain/errors.js";
import { VALUE_HINTS } from "../../domain/hints.js";
import type { PveClient, WaitTaskOptions } from "./pve-client.js";

const DISK_KEY = /^(scsi|virtio|sata|ide)\d+$/;
const UNIT: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** The disk the VM boots from: the first disk (not a cdrom) in boot order, else the first disk it has. */
export function bootDisk(config: Readonly<Record<string, unknown>>): string | undefined {
  const isDisk = (k: string) => DISK_KEY.test(k) && typeof config[k] === "string" && !/(?:^|,)media=cdrom(?:,|$)/.test(config[k] as string)
    && !/cloudinit/.test(config[k] as string);
  const order = /(?:^|,)order=([^,]+)/.exec(String(config.boot ?? ""))?.[1]?.split(";") ?? [];
  return order.find(isDisk) ?? Object.keys(config).filter(isDisk).sort()[0];
}

/** A drive's size= in bytes (undefined when it has none). */
export function driveBytes(drive: string): number | undefined {
  const m = /(?:^|,)size=(\d+(?:\.\d+)?)([KMGT])?(?:,|$)/.exec(drive);
  return m ? Math.trunc(Number(m[1]) * (m[2] ? UNIT[m[2]]! : 1)) : undefined;
}

export async function resizeBootDisk(o: {
  client: PveClient; node: string; vmid: number; diskGb: number; level: string; signal: AbortSignal; task: (upid: string) => WaitTaskOptions;
  log: (message: string) => void;
}): Promise<void> {
  const { client, node, vmid, signal } = o;
  const cfg = await client.api("GET /nodes/{node}/qemu/{vmid}/config", { node, vmid }, { signal }) as Record<string, unknown>;
  const disk = bootDisk(cfg);
  if (!disk) throw new ProviderError(`VM ${vmid} has no disk to give ${o.diskGb} GiB`, { details: { vmid, level: o.level } });
  const want = o.diskGb * UNIT.G!;
  const have = driveBytes(String(cfg[disk]));
  if (have !== undefined && have > want) {
    throw new ProviderError(`the template's ${disk} of VM ${vmid} (${(have / UNIT.G!).toFixed(1)} GiB) is larger than node ${o.level}'s disk of ${o.diskGb} GiB; PVE cannot shrink a disk`, {
      details: { vmid, disk, haveBytes: have, diskGb: o.diskGb, level: o.level, hint: VALUE_HINTS.diskTooSmall(o.level, Math.ceil(have / UNIT.G!)) },
    });
  }
  if (have === want) return;
  o.log(`growing ${disk} of VM ${vmid} to ${o.diskGb} GiB`);
  // A whole-GiB absolute size: the same request on a resume is a no-op for PVE.
  const upid = await client.api("PUT /nodes/{node}/qemu/{vmid}/resize", { node, vmid, disk: disk as "scsi0", size: `${o.diskGb}G` }, { signal });
  await client.waitTask(upid, o.task(upid));
}
