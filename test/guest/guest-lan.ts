// The LAN real-guest VMs of the PVE simulator plug into (issue 18): a host bridge with a
// unique name and a random 10.80.N.0/24, the host at .1 (where the simulators listen and
// level 0 runs), and a DHCP server on it (dnsmasq, DHCP only, leases keyed by MAC) because
// hsd configures its VMs with ipconfig0=ip=dhcp, as PVE sites do. startDhcp serves a
// bridge someone else made (test/pve/pve-tree.ts). Removed by close(), leaving nothing
// behind. Test-only.
// Imported by: test/guest/, test/pve/pve-tree.ts.

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bridgeAddArgs } from "../pve-sim/sim-bridge.js";
import { randomBytes } from "node:crypto";
import type { VmNetwork } from "../pve-sim/sim-vm.js";

export interface Dhcp {
  /** dnsmasq's log (DHCP offers and acks), for failure messages. */
  log(): Promise<string>;
  close(): Promise<void>;
}

/** dnsmasq answering DHCP only on `bridge` (<prefix>.100-.250; the host is <prefix>.1). */
export async function startDhcp(bridge: string, prefix: string): Promise<Dhcp> {
  const dir = await mkdtemp(join(tmpdir(), "hsd-guest-dhcp-"));
  const logFile = join(dir, "dnsmasq.log");
  const dnsmasq: ChildProcess = spawn("dnsmasq", [
    "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--no-resolv", "--no-hosts",
    `--interface=${bridge}`, "--bind-interfaces", "--except-interface=lo",
    `--dhcp-range=${prefix}.100,${prefix}.250,255.255.255.0,12h`, "--dhcp-authoritative", "--dhcp-ignore-clid",
    `--dhcp-leasefile=${join(dir, "leases")}`, `--pid-file=${join(dir, "pid")}`, `--log-facility=${logFile}`, "--log-dhcp",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  dnsmasq.stderr!.setEncoding("utf8").on("data", (c: string) => { err += c; });
  const close = async () => {
    if (dnsmasq.exitCode === null && dnsmasq.signalCode === null) {
      const gone = new Promise((r) => dnsmasq.once("close", r));
      dnsmasq.kill("SIGTERM");
      await gone;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // dnsmasq with --keep-in-foreground writes its pid file once it serves; an early exit is a failure.
    await new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + 20_000;
      const poll = () => {
        if (dnsmasq.exitCode !== null) { reject(new Error(`dnsmasq exited ${dnsmasq.exitCode}: ${err}`)); return; }
        void readFile(join(dir, "pid"), "utf8").then((p) => (p.trim() ? resolve() : Promise.reject(new Error("empty"))), () => {
          if (Date.now() > deadline) reject(new Error(`dnsmasq did not start within 20 s: ${err}`));
          else setTimeout(poll, 50); // polling a file dnsmasq is about to write
        });
      };
      poll();
    });
  } catch (e) {
    await close();
    throw e;
  }
  return { log: () => readFile(logFile, "utf8").catch(() => ""), close };
}

export interface GuestLan extends Dhcp {
  readonly bridge: string;
  readonly gateway: string;
  readonly tag: string;
  /** A VmNetwork for a simulator on this LAN (one allocator shared by all of them). */
  net(): VmNetwork;
}

export async function startGuestLan(): Promise<GuestLan> {
  const tag = `hq${randomBytes(2).toString("hex")}`;
  const bridge = `${tag}br`;
  const prefix = `10.80.${randomBytes(1)[0]! % 250}`;
  const gateway = `${prefix}.1`;
  const alloc = { next: 10 };
  let made = false;
  let dhcp: Dhcp | undefined;
  const close = async () => {
    await dhcp?.close();
    if (made) { try { execFileSync("ip", ["link", "del", bridge]); } catch { /* gone */ } }
  };
  try {
    execFileSync("ip", bridgeAddArgs(bridge));
    made = true;
    execFileSync("ip", ["addr", "add", `${gateway}/24`, "dev", bridge]);
    execFileSync("ip", ["link", "set", bridge, "up"]);
    dhcp = await startDhcp(bridge, prefix);
  } catch (e) {
    await close();
    throw e;
  }
  const served = dhcp;
  return { bridge, gateway, tag, net: () => ({ bridge, prefix, gateway, alloc, tag }), log: () => served.log(), close };
}
