// PveClient against the HTTPS simulator: pinning, auth, error mapping, the
// 595/596 retry rule, UPIDs and task waiting with log streaming.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { inspect } from "node:util";
import { startSim, clientFor, FAST_POLL } from "./helpers.js";
import type { PveSim } from "../pve-sim/pve-sim.js";
import { parseUpid, formatUpid } from "../../src/providers/pve/upid.js";
import { PveClient, isPveError, taskPollDelay, TASK_POLL_MIN_MS } from "../../src/providers/pve/pve-client.js";
import { HsError } from "../../src/domain/errors.js";

let sim: PveSim;
before(async () => { sim = await startSim(); });
after(async () => { await sim.close(); });

async function codeOf(p: Promise<unknown>): Promise<HsError> {
  try { await p; } catch (e) { assert.ok(e instanceof HsError, `not an HsError: ${String(e)}`); return e; }
  assert.fail("expected a rejection");
}

test("token auth over pinned HTTPS returns the data envelope", async () => {
  const v = await clientFor(sim).api("GET /version", {});
  assert.equal(v.version, "8.3.2");
  const nodes = await clientFor(sim).api("GET /nodes", {});
  assert.equal(nodes[0]!.ssl_fingerprint, sim.fingerprint);
});

test("no pin configured: refused with a hint, nothing sent", async () => {
  const before = sim.requests.length;
  const err = await codeOf(clientFor(sim, { fingerprint: "" }).api("GET /version", {}));
  assert.equal(err.code, "PveNotPinned");
  assert.ok(typeof err.details.hint === "string" && err.details.hint.length > 0);
  assert.equal(sim.requests.length, before);
});

test("fingerprint mismatch names both fingerprints and sends no request (no token leaves)", async () => {
  const before = sim.requests.length;
  const wrong = "AA:".repeat(31) + "AA";
  const err = await codeOf(clientFor(sim, { fingerprint: wrong }).api("GET /version", {}));
  assert.equal(err.code, "PveFingerprintMismatch");
  assert.equal(err.details.expected, wrong);
  assert.equal(err.details.actual, sim.fingerprint);
  assert.ok(err.message.includes(wrong) && err.message.includes(sim.fingerprint));
  assert.equal(sim.requests.length, before);
});

test("bad token: one 401 -> PveAuth, no retry, secret not in the error", async () => {
  const before = sim.requests.length;
  const secret = "11111111-2222-3333-4444-555555555555";
  const c = clientFor(sim, { tokenSecret: secret });
  const err = await codeOf(c.api("GET /version", {}));
  assert.equal(err.code, "PveAuth");
  assert.equal(err.details.status, 401);
  assert.equal(sim.requests.length - before, 1);
  const dump = err.message + JSON.stringify(err.details) + inspect(c) + JSON.stringify(c);
  assert.ok(!dump.includes(secret) && !dump.includes(sim.tokenSecret));
});

test("unknown route: 501 mapped with PVE's message", async () => {
  const err = await codeOf(clientFor(sim).call("GET", "/nodes/pve1/network", undefined, {}));
  assert.equal(err.code, "PveApi");
  assert.equal(err.details.status, 501);
  assert.equal(err.details.pveMessage, "Method 'GET /nodes/pve1/network' not implemented");
});

test("400 keeps the errors map; 500 keeps the first line", async () => {
  const e400 = await codeOf(clientFor(sim).api("GET /cluster/nextid", { vmid: 9000 }));
  assert.equal(e400.details.status, 400);
  assert.deepEqual(e400.details.errors, { vmid: "VM 9000 already exists" });
  const e500 = await codeOf(clientFor(sim).api("GET /nodes/{node}/qemu/{vmid}/config", { node: "pve1", vmid: 4242 }));
  assert.equal(e500.details.status, 500);
  assert.equal(e500.details.pveMessage, "Configuration file 'nodes/pve1/qemu-server/4242.conf' does not exist");
  assert.ok(isPveError(e500, 500, /does not exist/));
});

test("596 on a slow GET is retried; on a write it is not", async () => {
  sim.faults.slowSync["GET /version"] = { ms: 40_000, times: 1 };
  let before = sim.requests.length;
  const v = await clientFor(sim).api("GET /version", {});
  assert.equal(v.version, "8.3.2");
  assert.deepEqual(sim.requests.slice(before).map((r) => r.status), [596, 200]);

  sim.faults.slowSync["PUT /storage/{storage}"] = { ms: 40_000, times: 1 };
  before = sim.requests.length;
  const err = await codeOf(clientFor(sim).api("PUT /storage/{storage}", { storage: "local", content: "iso,vztmpl,backup,snippets" }));
  assert.equal(err.code, "PveProxy");
  assert.equal(err.details.status, 596);
  assert.equal(sim.requests.length - before, 1);
});

test("596 retries are bounded", async () => {
  sim.faults.slowSync["GET /nodes"] = { ms: 40_000, times: 10 };
  const before = sim.requests.length;
  const err = await codeOf(clientFor(sim, { proxyRetries: 2 }).api("GET /nodes", {}));
  assert.equal(err.code, "PveProxy");
  assert.equal(sim.requests.length - before, 3);
  delete sim.faults.slowSync["GET /nodes"];
});

test("UPID parse and format round-trip; node comes from the UPID", () => {
  const raw = "UPID:pve1:00000ACD:00006AE8:679A423B:qmclone:112:root@pam!hsd:";
  const u = parseUpid(raw);
  assert.equal(u.node, "pve1");
  assert.equal(u.type, "qmclone");
  assert.equal(u.id, "112");
  assert.equal(u.user, "root@pam!hsd");
  assert.equal(u.pid, 0xacd);
  assert.equal(formatUpid(u), raw);
  assert.throws(() => parseUpid("UPID:broken"), (e: HsError) => e.code === "PveApi");
});

test("waitTask survives a fresh 'no such task', streams the log, resolves OK", async () => {
  const c = clientFor(sim);
  const upid = await c.api("POST /nodes/{node}/qemu/{vmid}/clone", { node: "pve1", vmid: sim.templateVmid, newid: 150, name: "t150" });
  const lines: string[] = [];
  const st = await c.waitTask(upid, { ...FAST_POLL, onLog: (l) => lines.push(...l) });
  assert.equal(st.exitstatus, "OK");
  assert.ok(lines.some((l) => l.includes("linked clone")));
  assert.equal(lines.at(-1), "TASK OK");
  const statusCalls = sim.requests.filter((r) => r.path === `/nodes/pve1/tasks/${upid}/status`);
  assert.ok(statusCalls.some((r) => r.status === 400), "the fresh-UPID miss happened and was retried");
});

test("task polls pause 0.5% of the task's run time, within the bounds: a stop is noticed within max(min, 0.5%)", () => {
  assert.equal(taskPollDelay(0, 100, 2000), 100);
  assert.equal(taskPollDelay(19_000, 100, 2000), 100);
  assert.equal(taskPollDelay(5_000, 20, 2000), 25);
  assert.equal(taskPollDelay(60_000, 100, 2000), 300);
  assert.equal(taskPollDelay(600_000, 100, 2000), 2000);
  for (const elapsed of [0, 250, 1_000, 5_000, 20_000, 99_000, 100_000, 3_600_000]) {
    const d = taskPollDelay(elapsed, 100, 2000);
    assert.ok(d >= 100 && d <= 2000 && d <= Math.max(100, elapsed * 0.005 + 1), `${elapsed} ms -> ${d} ms`);
  }
});

test("waitTask follows the poll schedule on its clock and reads the log about once a second, plus at the end", async () => {
  // A clock that only the client's sleeps move: each pause is checked against the time the task has run so far.
  let clock = 0;
  const pauses: { at: number; ms: number }[] = [];
  const c = clientFor(sim, {
    now: () => clock,
    sleep: async (ms) => { pauses.push({ at: clock, ms }); clock += ms; await new Promise((r) => setImmediate(r)); },
  });
  const upid = await c.api("POST /nodes/{node}/qemu/{vmid}/clone", { node: "pve1", vmid: sim.templateVmid, newid: 151, name: "t151" });
  const lines: string[] = [];
  const st = await c.waitTask(upid, { timeoutMs: 30_000, onLog: (l) => lines.push(...l) });
  assert.equal(st.exitstatus, "OK");
  assert.equal(lines.at(-1), "TASK OK");
  assert.ok(pauses.length > 0);
  // No pause longer than the floor or 0.5% of the time the task has run: its end is seen within that.
  for (const p of pauses) assert.ok(p.ms >= TASK_POLL_MIN_MS && p.ms <= Math.max(TASK_POLL_MIN_MS, Math.round(p.at / 200)), `pause of ${p.ms} ms after ${p.at} ms`);
  const logReads = sim.requests.filter((r) => r.path === `/nodes/pve1/tasks/${upid}/log`).length;
  assert.ok(logReads <= Math.floor(clock / 1000) + 2, `${logReads} log reads over ${clock} ms of polling`);
});

test("a failed task becomes PveTaskFailed with PVE's exitstatus", async () => {
  const c = clientFor(sim);
  const start = { node: "pve1", vmid: 150 };
  await c.waitTask(await c.api("POST /nodes/{node}/qemu/{vmid}/status/start", start), FAST_POLL);
  const err = await codeOf(c.waitTask(await c.api("POST /nodes/{node}/qemu/{vmid}/status/start", start), FAST_POLL));
  assert.equal(err.code, "PveTaskFailed");
  assert.equal(err.details.exitstatus, "VM 150 already running");
});

test("connect timeout is its own bounded error", async () => {
  const sockets: net.Socket[] = [];
  const silent = net.createServer((s) => { sockets.push(s); });
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  try {
    const port = (silent.address() as net.AddressInfo).port;
    const c = new PveClient({ url: `https://127.0.0.1:${port}`, fingerprint: sim.fingerprint, tokenId: sim.tokenId, tokenSecret: "x", connectTimeoutMs: 150 });
    const err = await codeOf(c.api("GET /version", {}));
    assert.equal(err.code, "ConnectTimeout");
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  }
});

test("calls share one kept-alive TLS connection; an error answer, a re-pin or an idle spell each cost a new one", async () => {
  // Its own simulator: the idle check below watches every connection the API holds.
  const sim = await startSim();
  try { await keptAlive(sim); } finally { await sim.close(); }
});

async function keptAlive(sim: PveSim): Promise<void> {
  const c = clientFor(sim, { reuseIdleMs: 200 });
  const opened = () => sim.tlsConnections;
  const n0 = opened();
  for (let i = 0; i < 3; i++) await c.api("GET /version", {});
  assert.equal(opened() - n0, 1, "three GETs, one handshake");
  // pveproxy closes a connection after any answer >= 400: the next call connects again.
  await codeOf(c.api("GET /nodes/{node}/qemu/{vmid}/config", { node: sim.node, vmid: 4711 }));
  await c.api("GET /version", {});
  assert.equal(opened() - n0, 2, "the 500 went out on the kept connection, which then closed");
  // A connection pinned to the old fingerprint is never used after a re-pin.
  c.setFingerprint(sim.fingerprint);
  await c.api("GET /version", {});
  assert.equal(opened() - n0, 3);
  // Idle past its reuse window, the connection is closed by the client (the server sees it go), then a new one.
  const sockets = (sim as unknown as { sockets: Set<net.Socket> }).sockets;
  for (let i = 0; sockets.size > 0; i++) {
    assert.ok(i < 500, "the idle connection was not closed");
    await new Promise((r) => setTimeout(r, 10));
  }
  await c.api("GET /version", {});
  assert.equal(opened() - n0, 4);
}

test("a kept-alive connection the server closed as the request went out: a GET is sent again on a new one, a write is not", async () => {
  const { makeSimCert } = await import("../pve-sim/sim-cert.js");
  const { mkdtemp, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const https = await import("node:https");
  const dir = await mkdtemp(join(tmpdir(), "pve-http-stale-"));
  const cert = await makeSimCert(dir, "stale");
  const seen: string[] = [];
  // Answers the first request on each connection and keeps it alive; drops the connection on the second.
  const perSocket = new WeakMap<net.Socket, number>();
  const server = https.createServer({ key: cert.key, cert: cert.cert }, (req, res) => {
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    seen.push(`${req.method} #${n}`);
    if (n > 1) { req.socket.destroy(); return; }
    req.resume().on("end", () => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ data: { version: "8.3.2" } })));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const c = new PveClient({ url: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`, fingerprint: cert.fingerprint, tokenId: "root@pam!hsd", tokenSecret: "s" });
    await c.call("GET", "/version", undefined, {});
    await c.call("GET", "/version", undefined, {});
    assert.deepEqual(seen, ["GET #1", "GET #2", "GET #1"], "the GET went out again on a new connection");
    seen.length = 0;
    const err = await codeOf(c.call("POST", "/nodes/pve1/qemu/100/status/start", {}, {}));
    assert.equal(err.code, "PveUnreachable");
    assert.deepEqual(seen, ["POST #2"], "the write was sent once");
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  }
});
