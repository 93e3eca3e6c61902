// The simulator's guests: when a simulated VM starts, a real sshd answers for
// it on 127.0.0.1 with the keys cloud-init would install (the VM's sshkeys),
// and a root directory that stands in for the VM's filesystem. Test-only.
//
// The seam (see PveProvider's guestRoot / guestSshTarget): install writes the
// system paths under <root> (<root>/opt/hsd, <root>/etc/homestak/hsd.yaml,
// <root>/etc/systemd/system/hsd.service); the guest's fake `systemctl restart
// hsd` runs the unit's ExecStart with /opt/hsd, /usr/local/bin, /etc/homestak
// and /var/lib/hsd rebased under <root> plus `--root <root>/var/lib/hsd --config
// <root>/etc/homestak/hsd.yaml`, so the child hsd writes
// <root>/var/lib/hsd/run/ready.json as the real service writes
// /var/lib/hsd/run/ready.json. Power-off (stop/destroy) SIGKILLs that hsd's
// process group and stops the sshd.

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startSshd, type SimSshd } from "./sim-sshd.js";
import { fakeSystemctlScript, shq as q } from "./fake-systemctl.js";

export interface SimGuest {
  readonly vmid: number;
  /** The VM's "/" on this host. */
  readonly root: string;
  readonly sshd: SimSshd;
}


function fakeSystemctl(root: string): string {
  // Runs hsd.service's ExecStart with the system paths moved under R.
  return fakeSystemctlScript({
    setup: `R=${q(root)}\nunit="$R/etc/systemd/system/hsd.service"\npidf="$R/run/hsd.pid"`,
    logFile: `"$R/systemctl.log"`,
    start: `  cmd=$(sed -n 's/^ExecStart=//p' "$unit" | sed -e "s#/opt/hsd#$R/opt/hsd#g" -e "s#/etc/homestak#$R/etc/homestak#g" -e "s#/var/lib/hsd#$R/var/lib/hsd#g" -e "s#/usr/local/bin#$R/usr/local/bin#g")
  mkdir -p "$R/run" "$R/var/log"
  setsid sh -c "exec $cmd --root '$R/var/lib/hsd' --config '$R/etc/homestak/hsd.yaml'" </dev/null >>"$R/var/log/hsd.log" 2>&1 &
  echo $! > "$pidf"`,
  });
}

export async function startGuest(vmid: number, root: string, sshkeys: string): Promise<SimGuest> {
  await mkdir(root, { recursive: true });
  // cloud-init installs the keys PVE passes in sshkeys (URL-encoded, one per line).
  const keys = decodeURIComponent(sshkeys).split("\n").map((l) => l.trim()).filter(Boolean);
  const sshd = await startSshd({ dir: join(root, ".sshd"), authorizedKeys: keys });
  const bin = sshd.binDir;
  await writeFile(join(bin, "cloud-init"), "#!/bin/sh\necho 'status: done'\n", { mode: 0o755 });
  await writeFile(join(bin, "fuser"), "#!/bin/sh\nexit 1\n", { mode: 0o755 });
  await writeFile(join(bin, "systemctl"), fakeSystemctl(root), { mode: 0o755 });
  return { vmid, root, sshd };
}

/** Power-off: the guest's hsd process group is killed, its sshd stopped. */
export async function stopGuest(g: SimGuest): Promise<void> {
  // The fake systemctl's pid file, and the pid the daemon itself announced.
  const pids = new Set<number>();
  pids.add(Number((await readFile(join(g.root, "run/hsd.pid"), "utf8").catch(() => "")).trim()));
  pids.add(Number((JSON.parse(await readFile(join(g.root, "var/lib/hsd/run/ready.json"), "utf8").catch(() => "{}")) as { pid?: number }).pid));
  for (const pid of pids) {
    if (!(pid > 1)) continue;
    try { process.kill(-pid, "SIGKILL"); } catch { try { process.kill(pid, "SIGKILL"); } catch { /* already gone */ } }
  }
  await g.sshd.close();
}
