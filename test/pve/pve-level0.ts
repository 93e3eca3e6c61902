// Level 0 of a pve-provider e2e on its simulated "PVE node": `hsd run --root`
// inside a mount + UTS namespace (hostname, /etc/hosts and the simulator's
// certificate in an /etc overlay, kvm_intel nested=Y), with pvesm/pveum/pvecm/qm
// as shims to that simulator. See nest-pve-e2e.test.ts's header for the whole
// setup. Test-only; used by nest-pve-install-e2e.test.ts.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, writeFile, readFile, copyFile, open } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import type { PveSim } from "../pve-sim/pve-sim.js";
import { HSD } from "../helpers/hsctl.js";
import { readyFromPipe } from "../../src/util/ready-pipe.js";

const SHIM = fileURLToPath(new URL("../pve-sim/sim-shim.mjs", import.meta.url));
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Starts level 0 (config from `sim`); resolves with its process and pid once it is ready. */
export async function startPveLevel0(o: { root: string; l0: string; sim: PveSim; bridge: string; gateway: string; bundle: string }): Promise<{ proc: ChildProcess; pid: number }> {
  const { root, l0, sim } = o;
  const etc = join(root, "node0", "etc");
  await mkdir(join(etc, "pve/local"), { recursive: true });
  await mkdir(join(root, "node0", "work"), { recursive: true });
  await copyFile(sim.paths.certFile, join(etc, "pve/local/pve-ssl.pem"));
  const hosts = await readFile("/etc/hosts", "utf8");
  await writeFile(join(etc, "hosts"), `${hosts.replace(/\n?$/, "\n")}${o.gateway} ${sim.node}.${sim.domain} ${sim.node}\n`);
  const bin = join(root, "node0", "bin");
  await mkdir(bin, { recursive: true });
  for (const cmd of ["pveum", "pvesm", "pvecm", "qm"]) {
    await writeFile(join(bin, cmd), `#!/bin/sh\nexec ${q(process.execPath)} ${q(SHIM)} ${q(sim.controlUrl)} ${cmd} "$@"\n`, { mode: 0o755 });
  }
  await mkdir(l0, { recursive: true, mode: 0o700 });
  await writeFile(join(l0, "hsd.yaml"), stringify({
    level: { name: "l0" },
    ssh: { host: "0.0.0.0", port: 0, advertise_host: o.gateway },
    nest: { provider: "pve" },
    pve: {
      url: sim.url, node: sim.node, token_id: sim.tokenId, fingerprint: sim.fingerprint, storage: "local-lvm",
      snippet_storage: "local", template: sim.templateVmid, bridge: o.bridge, cores: 2, memory: 2048, bundle: o.bundle,
    },
  }), { mode: 0o600 });
  await writeFile(join(l0, "secrets.yaml"), stringify({ pve: { token_secret: sim.tokenSecret } }), { mode: 0o600 });
  const script = [
    "set -e",
    `echo ${q(sim.node)} > /proc/sys/kernel/hostname`,
    `mount -t overlay overlay -o lowerdir=/etc,upperdir=${q(etc)},workdir=${q(join(root, "node0", "work"))} /etc`,
    "mount -t tmpfs tmpfs /sys/module", "mkdir -p /sys/module/kvm_intel/parameters", "echo Y > /sys/module/kvm_intel/parameters/nested",
    `exec ${q(process.execPath)} ${q(HSD)} run --root ${q(l0)}`,
  ].join("\n");
  const log = await open(join(l0, "hsd.log"), "a", 0o600);
  const proc = spawn("unshare", ["-m", "-u", "--propagation", "private", "sh", "-c", script], {
    stdio: ["ignore", log.fd, log.fd, "pipe"],
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}`, HSD_READY_FD: "3", HSD_LOG_PRETTY: "" },
  });
  await log.close();
  const ready = await readyFromPipe(proc, AbortSignal.timeout(60_000), () => readFile(join(l0, "hsd.log"), "utf8").catch(() => ""));
  return { proc, pid: ready.pid };
}
