// Real namespaces (needs root, as CI has): a level reaches its parent only by
// its /30, a two-level chain is isolated from the host, partitions cut and
// restore, creation resumes, destruction is complete and idempotent.
// Only addresses in namespaces this file creates (10.231.x.y) and loopback are used.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import {
  canUseNetns, createLevelNetns, destroyLevelNetns, execPrefix, linkDown, linkUp, listNetns, runnerInNetns, type NetnsHandle,
} from "../../src/providers/local/netns.js";
import { runCommand } from "../../src/util/command-runner.js";
import { silentLogger } from "../../src/log/logger.js";
import { NetnsError } from "../../src/domain/errors.js";
import { eventually, linkNames, netnsList, probe, runPrefix, startServer, stopAllServers, sweep } from "./helpers.js";

const P = runPrefix("n");
const log = silentLogger();
const BASE = "10.231";
const name = (s: string) => `${P}${s}`;

before(async () => {
  // A leftover from a crashed run with a recycled pid would make results lie.
  await sweep(P);
});

after(async () => {
  await stopAllServers();
  await sweep(P);
  const left = (await netnsList()).filter((n) => n.startsWith(P));
  const links = (await linkNames()).filter((n) => n.startsWith(P));
  assert.deepEqual([left, links], [[], []], "cleanup left namespaces or links behind");
});

test("canUseNetns: root with iproute2 and nsenter can make a namespace", async () => {
  assert.deepEqual(await canUseNetns(), { ok: true });
  assert.deepEqual((await listNetns(runCommand, "hsdq")).length, 0, "probe namespace left behind");
});

test("one level: child and parent reach each other over the /30 only; destroy is complete and idempotent", async () => {
  const a = await createLevelNetns({ name: name("a"), subnetBase: BASE, levelPath: [P, "a"], run: runCommand, log });
  try {
    assert.ok((await netnsList()).includes(a.nsName));
    assert.equal(a.prefix, 30);
    assert.equal(a.parentAddr.split(".").slice(0, 3).join("."), a.childAddr.split(".").slice(0, 3).join("."));

    // Parent → child: server inside the namespace on the child address.
    const inChild = await startServer(a.nsName, a.childAddr, "from-child");
    assert.deepEqual(await probe(undefined, a.childAddr, inChild.port), { ok: true, data: "from-child" });

    // Child → parent: server here on the parent end's address.
    const inParent = await startServer(undefined, a.parentAddr, "from-parent");
    assert.deepEqual(await probe(a.nsName, a.parentAddr, inParent.port), { ok: true, data: "from-parent" });

    // The child's loopback is its own: up, and not the parent's.
    const hostLo = await startServer(undefined, "127.0.0.1", "host-lo");
    assert.deepEqual(await probe(undefined, "127.0.0.1", hostLo.port), { ok: true, data: "host-lo" });
    assert.deepEqual(await probe(a.nsName, "127.0.0.1", hostLo.port), { ok: false, code: "ECONNREFUSED" });
    const childLo = await startServer(a.nsName, "127.0.0.1", "child-lo");
    assert.deepEqual(await probe(a.nsName, "127.0.0.1", childLo.port), { ok: true, data: "child-lo" });

    // Destroy stops what still runs inside (the two servers) and removes everything.
    await destroyLevelNetns(a, runCommand, log);
    await eventually("servers in the namespace killed", 5_000, async () => inChild.proc.exitCode !== null || inChild.proc.signalCode !== null);
    assert.ok(childLo.proc.exitCode !== null || childLo.proc.signalCode !== null);
    assert.ok(!(await netnsList()).includes(a.nsName));
    assert.ok(!(await linkNames()).includes(a.parentIf));
    // Twice, by handle and by name, and a name that never existed.
    await destroyLevelNetns(a, runCommand, log);
    await destroyLevelNetns(a.nsName, runCommand, log);
    await destroyLevelNetns(name("never"), runCommand, log);
  } finally {
    await stopAllServers();
    await destroyLevelNetns(a, runCommand, log).catch(() => {});
  }
});

test("creation is idempotent, resumes a half-made namespace, and refuses a different shape", async () => {
  const opts = { name: name("r"), subnetBase: BASE, levelPath: [P, "r"], run: runCommand, log };
  try {
    const h1 = await createLevelNetns(opts);
    const h2 = await createLevelNetns(opts);
    assert.deepEqual(h2, h1);
    const addrs = await runCommand(["ip", "-n", h1.nsName, "-j", "-4", "addr", "show", "dev", h1.childIf], { check: true });
    assert.deepEqual((JSON.parse(addrs.stdout) as { addr_info: { local: string }[] }[])[0]!.addr_info.map((x) => x.local), [h1.childAddr]);

    // Another index for the same name: the running child would lose its parent. Refused, nothing changed.
    const other = (h1.index + 1) % 16384;
    await assert.rejects(createLevelNetns({ ...opts, index: other }), (e: unknown) => e instanceof NetnsError && e.code === "Netns");
    assert.deepEqual(await createLevelNetns(opts), h1);
    await destroyLevelNetns(h1, runCommand, log);

    // Crash after `ip netns add` and the veth, before addresses/links: finish the job.
    const half = { ...opts, name: name("h"), levelPath: [P, "h"] };
    await runCommand(["ip", "netns", "add", half.name], { check: true });
    await runCommand(["ip", "link", "add", `${half.name}p`, "type", "veth", "peer", "name", `${half.name}c`, "netns", half.name], { check: true });
    const h = await createLevelNetns(half);
    const srv = await startServer(h.nsName, h.childAddr, "resumed");
    assert.deepEqual(await probe(undefined, h.childAddr, srv.port), { ok: true, data: "resumed" });
    await destroyLevelNetns(h, runCommand, log);

    // A stale entry (a file in /var/run/netns that is no namespace) is replaced, not trusted.
    const stale = { ...opts, name: name("s"), levelPath: [P, "s"] };
    await runCommand(["touch", `/var/run/netns/${stale.name}`], { check: true });
    const s = await createLevelNetns(stale);
    const srv2 = await startServer(s.nsName, s.childAddr, "fresh");
    assert.deepEqual(await probe(undefined, s.childAddr, srv2.port), { ok: true, data: "fresh" });
    await destroyLevelNetns(s, runCommand, log);
  } finally {
    await stopAllServers();
  }
});

test("concurrent creations in one daemon get distinct /30s even with the same home slot", async () => {
  const hs = await Promise.all(["c1", "c2", "c3"].map((s) =>
    createLevelNetns({ name: name(s), subnetBase: BASE, levelPath: [P, "same"], run: runCommand, log })));
  try {
    assert.equal(new Set(hs.map((h) => h.index)).size, 3, `indexes ${hs.map((h) => h.index)}`);
  } finally {
    for (const h of hs) await destroyLevelNetns(h, runCommand, log);
  }
});

test("two-level chain: level 2 reaches level 1 only; partition cuts and restores the link; teardown deepest-first", async () => {
  let a: NetnsHandle | undefined;
  let b: NetnsHandle | undefined;
  const inA = () => runnerInNetns(runCommand, a!.nsName);
  try {
    a = await createLevelNetns({ name: name("pa"), subnetBase: BASE, levelPath: [P, "l1"], run: runCommand, log });
    // Level 2 is made the way a level-1 hsd makes it: by a process running inside A's netns (started with execPrefix).
    b = await createFromInside(a.nsName, name("pb"), [P, "l1", "l2"]);
    assert.notEqual(b.index, a.index);

    // B is a first-class namespace for the host too (same mount namespace), so the tree can always be cleaned up from the top.
    assert.ok((await netnsList()).includes(b.nsName));
    assert.ok((await linkNames(b.nsName)).includes(b.childIf));
    // The veth's parent end lives in A, not on the host.
    assert.ok((await linkNames(a.nsName)).includes(b.parentIf));
    assert.ok(!(await linkNames()).includes(b.parentIf));

    // B → A over B's /30.
    const aSrv = await startServer(a.nsName, "0.0.0.0", "level-1");
    assert.deepEqual(await probe(b.nsName, b.parentAddr, aSrv.port), { ok: true, data: "level-1" });
    // A → B.
    const bSrv = await startServer(b.nsName, b.childAddr, "level-2");
    assert.deepEqual(await probe(a.nsName, b.childAddr, bSrv.port), { ok: true, data: "level-2" });
    // B cannot reach the host: not the host's end of A's link (no route), not the host's loopback listener.
    const hostSrv = await startServer(undefined, a.parentAddr, "level-0");
    const hostLo = await startServer(undefined, "127.0.0.1", "level-0-lo");
    assert.deepEqual(await probe(a.nsName, a.parentAddr, hostSrv.port), { ok: true, data: "level-0" }, "A itself reaches the host");
    assert.deepEqual(await probe(b.nsName, a.parentAddr, hostSrv.port), { ok: false, code: "ENETUNREACH" });
    assert.deepEqual(await probe(b.nsName, "127.0.0.1", hostLo.port), { ok: false, code: "ECONNREFUSED" });

    // Partition: take the level-1 ↔ level-2 link down (from level 1, where its parent end is).
    await linkDown(b, inA(), log);
    // From the parent side the /30's route is gone with the link: an immediate error, no wait.
    assert.deepEqual(await probe(a.nsName, b.childAddr, bSrv.port, 2_000), { ok: false, code: "ENETUNREACH" });
    // From the child side the link only lost carrier: SYNs are dropped, so this fails by its 2 s bound.
    const fromB = await probe(b.nsName, b.parentAddr, aSrv.port, 2_000);
    assert.equal(fromB.ok, false, "B still reached A across a downed link");
    // The rest of the tree is untouched.
    assert.deepEqual(await probe(a.nsName, a.parentAddr, hostSrv.port), { ok: true, data: "level-0" });

    await linkUp(b, inA(), log);
    assert.deepEqual(await probe(a.nsName, b.childAddr, bSrv.port), { ok: true, data: "level-2" });
    assert.deepEqual(await probe(b.nsName, b.parentAddr, aSrv.port), { ok: true, data: "level-1" });

    // Teardown deepest-first, each from its parent's namespace.
    await destroyLevelNetns(b, inA(), log);
    assert.ok(!(await netnsList()).includes(b.nsName));
    assert.ok(!(await linkNames(a.nsName)).includes(b.parentIf));
    assert.ok(bSrv.proc.exitCode !== null || bSrv.proc.signalCode !== null || (await exited(bSrv.proc)));
    await destroyLevelNetns(b, inA(), log); // idempotent from inside too
    await destroyLevelNetns(a, runCommand, log);
    assert.deepEqual((await netnsList()).filter((n) => n.startsWith(P)), []);
    assert.deepEqual((await linkNames()).filter((n) => n.startsWith(P)), []);
  } finally {
    await stopAllServers();
    if (b && a && (await netnsList()).includes(a.nsName)) await destroyLevelNetns(b, inA(), log).catch(() => {});
    if (a) await destroyLevelNetns(a, runCommand, log).catch(() => {});
  }
});

test("destroy escalates to SIGKILL for a process that ignores SIGTERM", async () => {
  const h = await createLevelNetns({ name: name("k"), subnetBase: BASE, levelPath: [P, "k"], run: runCommand, log });
  try {
    const argv = [...execPrefix(h.nsName), process.execPath, "-e", "process.on('SIGTERM',()=>{}); console.log('ready'); setInterval(()=>{},1000)"];
    const stubborn = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "ignore"] });
    await new Promise<void>((resolve, reject) => {
      stubborn.stdout!.once("data", () => resolve());
      stubborn.once("exit", () => reject(new Error("stubborn process exited early")));
    });
    await destroyLevelNetns(h, runCommand, log, { graceMs: 300 });
    assert.ok(await exited(stubborn));
    assert.equal(stubborn.signalCode, "SIGKILL");
  } finally {
    await destroyLevelNetns(h, runCommand, log).catch(() => {});
  }
});

/** Runs the creation inside `parentNs` as a separate process, as a level-1 hsd would. */
async function createFromInside(parentNs: string, childName: string, levelPath: string[]): Promise<NetnsHandle> {
  const fixture = fileURLToPath(new URL("./fixtures/create-level.ts", import.meta.url));
  const res = await runCommand([...execPrefix(parentNs), process.execPath, "--import", "tsx", fixture, childName, BASE, levelPath.join("/")], {
    timeoutMs: 60_000, check: true, cwd: fileURLToPath(new URL("../..", import.meta.url)),
  });
  return JSON.parse(res.stdout.trim()) as NetnsHandle;
}

async function exited(p: import("node:child_process").ChildProcess): Promise<boolean> {
  if (p.exitCode !== null || p.signalCode !== null) return true;
  await eventually("process exited", 5_000, async () => p.exitCode !== null || p.signalCode !== null);
  return true;
}
