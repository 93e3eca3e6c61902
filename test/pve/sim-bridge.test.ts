// The simulator's bridges keep their MAC when a VM on them stops (test/pve-sim/sim-bridge.ts).
// The layout of a nested simulated tree: the host's bridge, a PVE-node VM whose eth0 is a
// port of its own bridge (its address on that bridge), and its child VM's veth on that
// bridge too. Powering the child off must not cut the node VM off from the host: its
// connections to the host (the relay to its own simulator) must still open.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createServer, type Server } from "node:net";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { bridgeAddArgs } from "../pve-sim/sim-bridge.js";

const ip = (...a: string[]) => execFileSync("ip", a, { stdio: ["ignore", "ignore", "pipe"] });
const mac = (dev: string, ns: string) =>
  execFileSync("ip", ["netns", "exec", ns, "cat", `/sys/class/net/${dev}/address`], { encoding: "utf8" }).trim();

/** Opens a TCP connection from inside ns to host:port; true once connected, false after boundMs. */
function connectsFrom(ns: string, host: string, port: number, boundMs: number): boolean {
  const js = `const s=require("net").connect(${port},${JSON.stringify(host)},()=>process.exit(0));s.on("error",()=>process.exit(2));setTimeout(()=>process.exit(3),${boundMs});`;
  return spawnSync("ip", ["netns", "exec", ns, process.execPath, "-e", js], { stdio: "ignore", timeout: boundMs + 10_000 }).status === 0;
}

test("a node VM still reaches the host after a VM whose veth had the lowest MAC on a bridge on its path powers off", async () => {
  const tag = `hb${randomBytes(2).toString("hex")}`;
  const prefix = `10.81.${randomBytes(1)[0]! % 250}`;
  const hostBr = `${tag}br`;
  const [node, child, sibling] = ["node", "child", "sib"].map((n) => `${tag}-${n}`) as [string, string, string];
  const made: Array<() => void> = [];
  let server: Server | undefined;
  try {
    ip(...bridgeAddArgs(hostBr));
    made.push(() => ip("link", "del", hostBr));
    ip("addr", "add", `${prefix}.1/24`, "dev", hostBr);
    ip("link", "set", hostBr, "up");
    for (const ns of [node, child, sibling]) { ip("netns", "add", ns); made.push(() => ip("netns", "del", ns)); }
    // The node VM: eth0 a port of its own bridge, as sim-vm.ts lays out a PVE node.
    ip("link", "add", `${tag}vn`, "type", "veth", "peer", "name", "eth0", "netns", node);
    made.push(() => ip("link", "del", `${tag}vn`));
    ip("link", "set", `${tag}vn`, "master", hostBr, "up");
    ip("-n", node, "link", "set", "lo", "up");
    ip("-n", node, ...bridgeAddArgs("vmbr0"));
    ip("-n", node, "link", "set", "eth0", "master", "vmbr0", "up");
    ip("-n", node, "addr", "add", `${prefix}.11/24`, "dev", "vmbr0");
    ip("-n", node, "link", "set", "vmbr0", "up");
    // A sibling VM on the host's bridge and a child VM on the node's: each NIC's host end has the lowest MAC on its bridge.
    ip("link", "add", `${tag}vs`, "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "eth0", "netns", sibling);
    made.push(() => { try { ip("link", "del", `${tag}vs`); } catch { /* the test removed it */ } });
    ip("link", "set", `${tag}vs`, "master", hostBr, "up");
    ip("-n", node, "link", "add", "childlink", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "eth0", "netns", child);
    ip("-n", node, "link", "set", "childlink", "master", "vmbr0", "up");
    for (const [ns, host] of [[sibling, 12], [child, 13]] as const) {
      ip("-n", ns, "addr", "add", `${prefix}.${host}/24`, "dev", "eth0");
      ip("-n", ns, "link", "set", "eth0", "up");
    }

    server = createServer((c) => c.destroy());
    await new Promise<void>((r) => server!.listen(0, `${prefix}.1`, r));
    const port = (server.address() as { port: number }).port;
    for (const ns of [node, child, sibling]) assert.ok(connectsFrom(ns, `${prefix}.1`, port, 10_000), `${ns} reaches the host`);
    const hostMac = readFileSync(`/sys/class/net/${hostBr}/address`, "utf8").trim();
    const nodeMac = mac("vmbr0", node);

    // The sibling powers off: its NIC leaves the host's bridge. The node's ARP entry
    // for the host was just confirmed, so a changed host MAC would leave it unanswered.
    ip("link", "del", `${tag}vs`);
    assert.equal(readFileSync(`/sys/class/net/${hostBr}/address`, "utf8").trim(), hostMac, "the host's bridge kept its MAC");
    assert.ok(connectsFrom(node, `${prefix}.1`, port, 5_000), "the node VM still reaches the host");
    // The child powers off: its NIC leaves the node's own bridge.
    ip("-n", node, "link", "del", "childlink");
    assert.equal(mac("vmbr0", node), nodeMac, "the node's bridge kept its MAC");
    assert.ok(connectsFrom(node, `${prefix}.1`, port, 5_000), "the node VM still reaches the host after its child stopped");
  } finally {
    server?.close();
    for (const undo of made.reverse()) { try { undo(); } catch { /* already gone */ } }
  }
});
