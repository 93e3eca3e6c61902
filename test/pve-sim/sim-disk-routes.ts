// The simulator's VM list and disk resize, as qemu-server does them: the list
// (GET /nodes/{node}/qemu) as PVE's schema returns it, and resize as a task
// whose worker raises PVE's errors (locked, no such disk, a cdrom, shrinking)
// and writes the drive's new size=, formatted as PVE prints it. Test-only;
// imported by pve-sim-api.ts.

import { SimError, type PveSim, type SimVm } from "./pve-sim.js";

type Handler = (p: Record<string, string>, path: Record<string, string>, who: string) => { data?: unknown };
export interface SimRoute { method: string; template: string; handler: Handler }

const UNIT: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** PVE::JSONSchema::parse_size: digits with an optional K/M/G/T. */
export function parseSize(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)([KMGT])?$/.exec(s);
  return m ? Math.trunc(Number(m[1]) * (m[2] ? UNIT[m[2]]! : 1)) : undefined;
}

/** PVE::JSONSchema::format_size: the largest unit that divides the size exactly. */
export function formatSize(bytes: number): string {
  let n = bytes;
  for (const u of ["", "K", "M", "G"]) {
    if (n % 1024 !== 0) return `${n}${u}`;
    n /= 1024;
  }
  return `${n}T`;
}

/** The drive's size= in bytes (0 when it has none). */
export function driveSize(value: string): number {
  const m = /(?:^|,)size=([^,]+)/.exec(value);
  return m ? parseSize(m[1]!) ?? 0 : 0;
}

export function diskRoutes(sim: PveSim, checkNode: (node: string) => void, vmOf: (path: Record<string, string>) => SimVm): SimRoute[] {
  return [
    {
      method: "GET", template: "/nodes/{node}/qemu",
      handler: (_p, path) => {
        checkNode(path.node!);
        return { data: [...sim.vms.values()].map((vm) => ({
          vmid: vm.vmid, name: vm.config.name, status: vm.status,
          ...(vm.config.template === "1" ? { template: 1 } : {}),
          ...(vm.config.lock ? { lock: vm.config.lock } : {}),
          maxdisk: driveSize(vm.config.scsi0 ?? ""), maxmem: Number(vm.config.memory ?? 512) * 1024 * 1024, cpus: Number(vm.config.cores ?? 1),
        })) };
      },
    },
    {
      // qemu-server's resize_vm: every check runs in the worker (lock_config), so each failure is the task's exitstatus.
      method: "PUT", template: "/nodes/{node}/qemu/{vmid}/resize",
      handler: (p, path, who) => {
        const vm = vmOf(path);
        const digest = sim.digest(vm.config);
        return { data: sim.startTask("resize", String(vm.vmid), who, sim.faults.taskMs, [], () => {
          if (p.digest && p.digest !== digest) throw new Error("checksum mismatch (file change by other user?)");
          if (vm.config.lock) throw new Error(`VM is locked (${vm.config.lock})`);
          const drive = vm.config[p.disk!];
          if (!drive) throw new Error(`disk '${p.disk}' does not exist`);
          if (/(?:^|,)media=cdrom(?:,|$)/.test(drive)) throw new Error("you can't resize a cdrom");
          const size = driveSize(drive);
          const m = /^(\+)?(\d+(?:\.\d+)?[KMGT]?)$/.exec(p.size!)!; // the schema's pattern held already
          const wanted = Math.trunc(parseSize(m[2]!)! + (m[1] ? size : 0));
          if (wanted < size) throw new Error("shrinking disks is not supported");
          if (wanted === size) return;
          vm.config[p.disk!] = /(?:^|,)size=/.test(drive) ? drive.replace(/((?:^|,)size=)[^,]+/, `$1${formatSize(wanted)}`) : `${drive},size=${formatSize(wanted)}`;
        }) };
      },
    },
  ];
}
