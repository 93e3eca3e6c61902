// cloud-init in the simulator's real-process VMs (sim-vm.ts): what a first boot
// does with the VM's config and user-data. The VM's CD-ROMs (ISO volumes, not the
// cloud-init drive) are unpacked where the VM's `mount LABEL=<label>` finds them
// (this machine's kernel may lack iso9660, so the VM's mount is a shim that binds
// the unpacked files read-only); the user-data's runcmd becomes one shell script,
// as cloud-init writes it, run once per instance in the background of the boot;
// `cloud-init status` says running until it ends, then done, or error when it
// failed (as cloud-init's scripts_user does). Test-only; used by sim-vm.ts and pve-sim.ts.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import { shq as q } from "./fake-systemctl.js";

const run = promisify(execFile);

/** Where a VM's cloud-init state lives, on the host (it survives the VM's reboots, as /var/lib/cloud does). */
export const ciDir = (root: string) => join(root, "cloud-init");
/** Where its CD-ROMs are unpacked, one directory per volume label. */
export const cdromDir = (root: string) => join(root, "cdrom");

/** The runcmd of a #cloud-config user-data as cloud-init's script (lists quoted word by word), or undefined when none. */
export function runcmdScript(userData: string | undefined): string | undefined {
  if (!userData) return undefined;
  const doc = parse(userData) as { runcmd?: unknown } | null;
  const items = Array.isArray(doc?.runcmd) ? doc.runcmd as unknown[] : [];
  if (items.length === 0) return undefined;
  const line = (i: unknown) => Array.isArray(i) ? i.map((w) => q(String(w))).join(" ") : String(i);
  return `#!/bin/sh\n${items.map(line).join("\n")}\n`;
}

/**
 * Writes the VM's cloud-init state for a boot: status `running` and the runcmd
 * script when the user-data has one and it has not run yet, else `done`.
 */
export async function stageCloudInit(root: string, userData: string | undefined): Promise<void> {
  const dir = ciDir(root);
  await mkdir(dir, { recursive: true });
  // Once per instance: a VM started again (stop, start) has run it already.
  const was = await readFile(join(dir, "status"), "utf8").catch(() => "");
  if (/^status: (done|error)/m.test(was)) return;
  const script = runcmdScript(userData);
  if (!script) {
    await writeFile(join(dir, "status"), "status: done\n");
    return;
  }
  await writeFile(join(dir, "runcmd"), script, { mode: 0o755 });
  await writeFile(join(dir, "status"), "status: running\n");
}

/**
 * sh lines of the boot (inside the VM) that run a pending runcmd in the background, then
 * record the outcome: what cloud-init's final stage does once per instance.
 */
export function cloudInitBootLines(root: string, path: string): string[] {
  const d = ciDir(root);
  const status = q(join(d, "status"));
  return [
    `if grep -q '^status: running' ${status} 2>/dev/null; then`,
    // cloud-final.service's environment: systemd's, not the simulator's.
    `  ( env -i PATH=${path} sh ${q(join(d, "runcmd"))} >> ${q(join(d, "output.log"))} 2>&1`,
    `    if [ $? -eq 0 ]; then s='status: done'; else s='status: error\ndetail:\nscripts_user: Failed running /var/lib/cloud/instance/scripts/runcmd'; fi`,
    `    printf "$s\\n" > ${q(join(d, "status.tmp"))} && mv ${q(join(d, "status.tmp"))} ${status} ) </dev/null >/dev/null 2>&1 &`,
    "fi",
  ];
}

/** The VM's `cloud-init`: status (and --wait, --long) from the state above. */
export function fakeCloudInit(root: string): string {
  const status = q(join(ciDir(root), "status"));
  return `#!/bin/sh
[ "$1" = status ] || exit 0
if [ "$2" = --wait ]; then while grep -q '^status: running' ${status} 2>/dev/null; do sleep 0.05; done; fi
cat ${status} 2>/dev/null || echo 'status: running'
grep -q '^status: error' ${status} 2>/dev/null && exit 1
exit 0
`;
}

/** The VM's `mount`: a LABEL= of one of its CD-ROMs binds that CD's files read-only; anything else is the real mount. */
export function fakeMount(root: string): string {
  return `#!/bin/sh
for a in "$@"; do
  case "$a" in LABEL=*) l=\${a#LABEL=} ;; -*|ro|rw) ;; *) [ -n "$l" ] && t=$a ;; esac
done
if [ -n "$l" ] && [ -n "$t" ]; then
  [ -d ${q(cdromDir(root))}/"$l" ] || { echo "mount: $t: can't find LABEL=$l." >&2; exit 1; }
  /bin/mount --bind ${q(cdromDir(root))}/"$l" "$t" && exec /bin/mount -o remount,bind,ro "$t"
fi
exec /bin/mount "$@"
`;
}

/** A VM config's CD-ROMs that hold an ISO volume (not the cloud-init drive): `<bus><n>: <storage>:iso/<file>,media=cdrom`. */
export function cdromVolumes(config: Record<string, string>): { key: string; volume: string }[] {
  return Object.entries(config)
    .filter(([k, v]) => /^(ide|sata|scsi)\d+$/.test(k) && /(^|,)media=cdrom(,|$)/.test(v) && /^[A-Za-z0-9_.-]+:iso\/[^/,]+(,|$)/.test(v))
    .map(([key, v]) => ({ key, volume: v.split(",")[0]! }));
}

/**
 * The VM's CD-ROMs: every `<bus><n>: <storage>:iso/<file>,media=cdrom` of its config,
 * read from the node's storage and unpacked by its volume label (isoinfo).
 */
export async function unpackCdroms(root: string, config: Record<string, string>, readIso: (volume: string) => Promise<Buffer>): Promise<void> {
  const dir = cdromDir(root);
  await rm(dir, { recursive: true, force: true });
  for (const { key: k, volume: vol } of cdromVolumes(config)) {
    await mkdir(dir, { recursive: true });
    const iso = join(dir, `${k}.iso`);
    await writeFile(iso, await readIso(vol));
    const info = (await run("isoinfo", ["-d", "-i", iso])).stdout;
    const label = /^Volume id: (.+)$/m.exec(info)?.[1]?.trim();
    if (!label) throw new Error(`${k}: ${vol} has no volume label`);
    const into = join(dir, label);
    await mkdir(into, { recursive: true });
    const listed = (await run("isoinfo", ["-R", "-f", "-i", iso])).stdout.split("\n").filter((f) => f.startsWith("/"));
    // Directories are listed too: a name something else is under.
    const files = listed.filter((f) => !listed.some((g) => g.startsWith(`${f}/`)));
    for (const f of files) {
      const out = (await run("isoinfo", ["-R", "-i", iso, "-x", f], { encoding: "buffer", maxBuffer: 1 << 30 })).stdout;
      await mkdir(join(into, f, ".."), { recursive: true });
      await writeFile(join(into, f), out, { mode: 0o644 });
    }
    await rm(iso, { force: true });
  }
}
