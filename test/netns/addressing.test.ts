// Pure parts of netns: names, /30 arithmetic, and the allocation scheme
// (probing and resume) driven by a fake runner that plays `ip`.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  SLOTS_PER_BASE, allocateIndex, execPrefix, indexOfAddress, levelNetnsName, netnsHandle, preferredIndex, slotAddresses, validateNetnsName, vethNames,
} from "../../src/providers/local/netns.js";
import type { CommandRunner } from "../../src/util/command-runner.js";
import { InvalidArgumentError } from "../../src/domain/errors.js";

test("slotAddresses: each index is its own /30; parent .1, child .2; round-trips through indexOfAddress", () => {
  assert.deepEqual(slotAddresses("10.231", 0), { network: "10.231.0.0", parentAddr: "10.231.0.1", childAddr: "10.231.0.2" });
  assert.deepEqual(slotAddresses("10.231", 1), { network: "10.231.0.4", parentAddr: "10.231.0.5", childAddr: "10.231.0.6" });
  assert.deepEqual(slotAddresses("10.231", 64), { network: "10.231.1.0", parentAddr: "10.231.1.1", childAddr: "10.231.1.2" });
  assert.deepEqual(slotAddresses("10.231", SLOTS_PER_BASE - 1), { network: "10.231.255.252", parentAddr: "10.231.255.253", childAddr: "10.231.255.254" });
  const seen = new Set<string>();
  for (let i = 0; i < SLOTS_PER_BASE; i++) {
    const s = slotAddresses("10.231", i);
    assert.equal(indexOfAddress("10.231", s.parentAddr), i);
    assert.equal(indexOfAddress("10.231", s.childAddr), i);
    assert.equal(indexOfAddress("10.231", s.network), i);
    seen.add(s.network);
  }
  assert.equal(seen.size, SLOTS_PER_BASE);
  assert.equal(indexOfAddress("10.231", "10.232.0.1"), undefined);
  assert.equal(indexOfAddress("10.231", "127.0.0.1"), undefined);
});

test("bad subnet bases and indexes are InvalidArgument", () => {
  for (const b of ["10", "10.231.0", "10.256", "a.b", ""]) assert.throws(() => slotAddresses(b, 0), InvalidArgumentError, b);
  for (const i of [-1, SLOTS_PER_BASE, 1.5, NaN]) assert.throws(() => slotAddresses("10.231", i), InvalidArgumentError, String(i));
});

test("names: deterministic per level path, ≤ 14 chars, veth names fit IFNAMSIZ", () => {
  const a = levelNetnsName(["l0", "l1", "l2"]);
  assert.equal(a, levelNetnsName("l0/l1/l2"));
  assert.notEqual(a, levelNetnsName(["l0", "l1", "l3"]));
  assert.match(a, /^hsd-[0-9a-f]{10}$/);
  const { parentIf, childIf } = vethNames(a);
  assert.ok(parentIf.length <= 15 && childIf.length <= 15);
  assert.notEqual(parentIf, childIf);
  for (const bad of ["", "UPPER", "-lead", "a".repeat(15), "has space", "x/y"]) assert.throws(() => validateNetnsName(bad), InvalidArgumentError, bad);
  assert.throws(() => levelNetnsName("x", "toolongpfx"), InvalidArgumentError);
  assert.deepEqual(execPrefix(a), ["nsenter", `--net=/var/run/netns/${a}`, "--"]);
  assert.throws(() => execPrefix("../etc"), InvalidArgumentError);
});

test("netnsHandle is JSON-safe and reconstructs the same handle", () => {
  const h = netnsHandle("hsd-abc", "10.231", 5);
  assert.deepEqual(JSON.parse(JSON.stringify(h)), h);
  assert.deepEqual(h, { nsName: "hsd-abc", parentIf: "hsd-abcp", childIf: "hsd-abcc", parentAddr: "10.231.0.21", childAddr: "10.231.0.22", prefix: 30, subnetBase: "10.231", index: 5 });
});

test("preferredIndex is stable and in range", () => {
  const i = preferredIndex("l0/l1");
  assert.equal(i, preferredIndex("l0/l1"));
  assert.ok(i >= 0 && i < SLOTS_PER_BASE);
});

/** Plays `ip` for allocation: addresses here, in named namespaces, and one optional existing parent veth. */
function fakeIp(state: { here: string[]; namespaces: Record<string, string[]>; parentLink?: { ifname: string; addrs: string[] } }): CommandRunner {
  const addrJson = (addrs: string[]) => JSON.stringify([{ ifindex: 1, ifname: "x", addr_info: addrs.map((a) => ({ family: "inet", local: a, prefixlen: 30 })) }]);
  return async (argv) => {
    const a = [...argv];
    let ns: string | undefined;
    if (a[1] === "-n") { ns = a[2]; a.splice(1, 2); }
    const cmd = a.slice(1).join(" ");
    if (cmd === "-j netns list") {
      const names = Object.keys(state.namespaces);
      return { code: 0, stdout: names.length ? JSON.stringify(names.map((name) => ({ name }))) : "", stderr: "" };
    }
    if (cmd === "-j -4 addr show") return { code: 0, stdout: addrJson(ns === undefined ? state.here : state.namespaces[ns] ?? []), stderr: "" };
    const link = /^-d -j link show dev (\S+)$/.exec(cmd);
    if (link && ns === undefined) {
      if (state.parentLink?.ifname === link[1]) return { code: 0, stdout: JSON.stringify([{ ifindex: 7, ifname: link[1] }]), stderr: "" };
      return { code: 1, stdout: "", stderr: `Device "${link[1]}" does not exist.` };
    }
    const addr = /^-j -4 addr show dev (\S+)$/.exec(cmd);
    if (addr && state.parentLink?.ifname === addr[1]) return { code: 0, stdout: addrJson(state.parentLink.addrs), stderr: "" };
    throw new Error(`fake ip: unexpected ${argv.join(" ")}`);
  };
}

test("allocateIndex starts at the level path's home slot when it is free", async () => {
  const i = await allocateIndex({ name: "hsd-x", subnetBase: "10.231", levelPath: ["l0", "l1"], run: fakeIp({ here: ["127.0.0.1"], namespaces: {} }) });
  assert.equal(i, preferredIndex("l0/l1"));
});

test("allocateIndex probes past /30s in use here and in other namespaces, and ignores other subnets", async () => {
  const home = preferredIndex("l0/l1");
  const next = (k: number) => (home + k) % SLOTS_PER_BASE;
  const run = fakeIp({
    here: [slotAddresses("10.231", home).parentAddr, "10.232.0.1", slotAddresses("10.232", next(1)).parentAddr],
    namespaces: { other: [slotAddresses("10.231", next(1)).childAddr], third: [slotAddresses("10.231", next(2)).network] },
  });
  assert.equal(await allocateIndex({ name: "hsd-x", subnetBase: "10.231", levelPath: "l0/l1", run }), next(3));
  // Only this namespace when asked: the other namespaces' slots are free again.
  assert.equal(await allocateIndex({ name: "hsd-x", subnetBase: "10.231", levelPath: "l0/l1", run, allNamespaces: false }), next(1));
});

test("allocateIndex wraps around the top of the /16", async () => {
  // Find a key whose home slot is the last one is impractical; instead fill from home to the end.
  const home = preferredIndex("wrap");
  const here: string[] = [];
  for (let i = home; i < SLOTS_PER_BASE; i++) here.push(slotAddresses("10.231", i).parentAddr);
  assert.equal(await allocateIndex({ name: "hsd-x", subnetBase: "10.231", levelPath: "wrap", run: fakeIp({ here, namespaces: {} }) }), 0);
});

test("allocateIndex resumes: an existing parent veth keeps its /30", async () => {
  const run = fakeIp({ here: [slotAddresses("10.231", 77).parentAddr], namespaces: {}, parentLink: { ifname: "hsd-xp", addrs: [slotAddresses("10.231", 77).parentAddr] } });
  assert.equal(await allocateIndex({ name: "hsd-x", subnetBase: "10.231", levelPath: "anything", run }), 77);
});
