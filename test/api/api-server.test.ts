// The API server with fake LevelApi/AccessApi over a real unix socket:
// request validation, event streaming (order, no loss, failure after flush),
// cancellation into the LevelApi, graceful close, and domain<->proto conversion.

import { parseConfig } from "../../src/config/load-config.js";
import { PROVIDER_CONFIGS, providerOptions } from "../../src/providers/registry.js";
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, access as fsAccess } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startApiServer, type ApiServer } from "../../src/api/server.js";
import { fromProtoEvent, fromProtoStatus, toProtoEvent, toProtoStatus } from "../../src/rpc/convert.js";
import { createClient } from "../../src/rpc/client.js";
import { AccessService, Isolation, KeyRole, NestService } from "../../src/gen/homestak/nest/v1/nest_pb.js";
import { DaemonRunningError, HsError, LevelWentDownError, PhaseTimeoutError } from "../../src/domain/errors.js";
import { silentLogger } from "../../src/log/logger.js";
import { withTimeout } from "../../src/util/timeout.js";
import type { AccessApi, LevelApi, LevelStatus, NestOptions, SyncOptions } from "../../src/domain/level-api.js";
import { nestClient as levelNestClient } from "../../src/rpc/level-client.js";
import type { EventSink, LevelEvent } from "../../src/domain/events.js";

const WAIT_MS = 10_000;
const ev = (i: number, extra: Partial<LevelEvent> = {}): LevelEvent => ({ levelPath: ["l0"], phase: "sync", kind: "progress", time: 1_700_000_000_000 + i, message: `e${i}`, ...extra });

let dir: string;
let server: ApiServer;
let socket: string;
const seen: { nest?: Record<string, unknown>; secrets?: string; nestSignal?: AbortSignal; sync?: SyncOptions[] } = {};
const defaults = parseConfig("", "<defaults>", { root: "/srv/level", providers: PROVIDER_CONFIGS });
let nestStarted!: () => void;
let nestStartedP: Promise<void>;

const status: LevelStatus = {
  name: "l0", depth: 0, state: "ready", address: "127.0.0.1:2222", hsdVersion: "0.1.0", hostKeyFingerprint: "SHA256:x",
  provider: "local", repos: [{ name: "tofu", servedCommit: "abc", worktreeCommit: "", dirty: false, dirtyFiles: [] }],
  phases: [{ phase: "sync", kind: "finished", durationMs: 1200, budgetMs: 120_000 }],
  children: [{
    name: "l1", depth: 1, state: "failed", address: "", hsdVersion: "", hostKeyFingerprint: "", provider: "local",
    repos: [], phases: [], children: [], outOfSync: true, failure: { code: "PhaseTimeout", message: "boot over budget", hint: "h" },
  }],
  outOfSync: false,
};

const level: LevelApi = {
  async nest(opts: NestOptions, sink: EventSink, signal: AbortSignal) {
    // What reached the level: the request's fields and its provider options.
    seen.nest = { depth: opts.depth, width: opts.width, provider: opts.provider, ...opts.options };
    seen.nestSignal = signal;
    if (opts.depth === 7) {
      // Runs until cancelled.
      nestStarted();
      sink(ev(0));
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      throw signal.reason;
    }
    // A burst emitted synchronously: nothing may be lost or reordered.
    for (let i = 0; i < 2000; i++) sink(ev(i));
    if (opts.depth === 2) throw new PhaseTimeoutError("boot over budget");
  },
  async status() { return status; },
  async destroy() {},
  async sync(opts: SyncOptions) { (seen.sync ??= []).push(opts); },
  async identify() { return { name: "l0", depth: 0, hsdVersion: "0.1.0", publicKey: "", hostKeyFingerprint: "", sshAddress: "", repos: [] }; },
  async putSecrets(yaml: string) { seen.secrets = yaml; return ["site"]; },
  async configure() {},
  async doctor() { return []; },
  async *logs() { /* no lines */ },
};
const keys: AccessApi = {
  async addKey(k) { return { publicKey: k.publicKey, role: k.role, fingerprint: "SHA256:fp", comment: k.comment ?? "" }; },
  async removeKey() { return true; },
  async listKeys() { return []; },
};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hsd-api-"));
  socket = join(dir, "run/hsd.sock");
  nestStartedP = new Promise((r) => { nestStarted = r; });
  server = await startApiServer({ socketPath: socket, level, access: keys, log: silentLogger(),
    limits: { maxDepth: 8, maxWidth: 4, provider: "local", providerOptions: (p, req) => providerOptions(defaults, p, req) } });
});
after(async () => {
  await server?.close(1000);
  await rm(dir, { recursive: true, force: true });
});

const nestClient = () => createClient(NestService, socket);

test("a nest stream delivers every event in order, then the level's typed failure", async () => {
  const c = nestClient();
  try {
    const got: LevelEvent[] = [];
    await assert.rejects(async () => {
      for await (const r of c.nest({ depth: 2 })) got.push(fromProtoEvent(r.event!));
    }, (e: unknown) => (e as HsError).code === "PhaseTimeout");
    assert.equal(got.length, 2000);
    got.forEach((g, i) => assert.equal(g.message, `e${i}`));
    assert.deepEqual(seen.nest, { depth: 2, width: 1, provider: "local", isolation: "process" });
  } finally { c.close(); }
});

test("nest requests are validated at the boundary", async () => {
  const c = nestClient();
  try {
    for (const bad of [{ depth: 9 }, { depth: 1, width: 5 }, { depth: 1, provider: "vmware" }, { depth: 1, isolation: 9 as Isolation }]) {
      const got: unknown[] = [];
      await assert.rejects(async () => { for await (const r of c.nest(bad)) got.push(r); },
        (e: unknown) => (e as HsError).code === "InvalidArgument", JSON.stringify(bad));
      assert.equal(got.length, 0);
    }
    for await (const _ of c.nest({ depth: 1, width: 4, provider: "pve", isolation: Isolation.NETNS })) { /* drain */ }
    assert.deepEqual(seen.nest, { depth: 1, width: 4, provider: "pve", isolation: "netns" });
  } finally { c.close(); }
});

test("a sync's parent refs reach the level as sent; malformed ones are refused before it is called", async () => {
  const A = "a".repeat(40);
  const B = "b".repeat(40);
  const refs = {
    tofu: { head: "refs/heads/main", refs: { "refs/heads/main": A, "refs/heads/_working": B, "refs/tags/v1": B } },
    ansible: { head: "refs/heads/main", refs: { "refs/heads/main": B } },
  };
  const lc = levelNestClient(socket);
  try {
    seen.sync = [];
    for await (const _ of lc.sync({ recursive: true, parentRefs: refs })) { /* drain */ }
    for await (const _ of lc.sync({ recursive: false })) { /* drain */ }
    assert.deepEqual(seen.sync.map((o) => o.parentRefs), [refs, undefined]);
  } finally { lc.close(); }
  const c = nestClient();
  try {
    const one = (repo: string, head: string, r: Record<string, string>) => ({ repo, head, refs: r });
    const bad = [
      [one("../etc", "refs/heads/main", { "refs/heads/main": A })],
      [one("tofu", "refs/heads/main", { "refs/heads/main": A }), one("tofu", "refs/heads/main", { "refs/heads/main": A })],
      [one("tofu", "refs/heads/dev", { "refs/heads/main": A })],
      [one("tofu", "refs/tags/v1", { "refs/tags/v1": A })],
      [one("tofu", "refs/heads/main", { "refs/heads/main": A, "refs/remotes/origin/x": A })],
      [one("tofu", "refs/heads/main", { "refs/heads/main": A, "refs/heads/../../x": A })],
      [one("tofu", "refs/heads/main", { "refs/heads/main": "not-an-oid" })],
      Array.from({ length: 65 }, (_, i) => one(`r${i}`, "refs/heads/main", { "refs/heads/main": A })),
    ];
    seen.sync = [];
    for (const parentRefs of bad) {
      const got: unknown[] = [];
      await assert.rejects(async () => { for await (const r of c.sync({ recursive: true, parentRefs })) got.push(r); },
        (e: unknown) => (e as HsError).code === "InvalidArgument", JSON.stringify(parentRefs).slice(0, 200));
      assert.equal(got.length, 0);
    }
    assert.equal(seen.sync.length, 0, "the level was never called");
  } finally { c.close(); }
});

test("breaking out of a nest stream aborts the LevelApi's signal", async () => {
  const c = nestClient();
  try {
    for await (const _ of c.nest({ depth: 7 })) break;
    await withTimeout(WAIT_MS, () => new HsError("not aborted"), () => nestStartedP);
    const sig = seen.nestSignal!;
    await withTimeout(WAIT_MS, () => new HsError("not aborted"), () => new Promise((r) => {
      if (sig.aborted) r(undefined); else sig.addEventListener("abort", r, { once: true });
    }));
    assert.equal((sig.reason as HsError).code, "Cancelled");
  } finally { c.close(); }
});

test("PutSecrets accepts a mapping and refuses anything else without echoing it", async () => {
  const c = nestClient();
  try {
    assert.deepEqual((await c.putSecrets({ yaml: "site:\n  token: s3cr3t\n" })).keys, ["site"]);
    for (const yaml of ["- a\n- b\n", "just a string", "a: [unclosed s3cr3t", "x".repeat(70_000)]) {
      await assert.rejects(c.putSecrets({ yaml }), (e: unknown) => {
        assert.equal((e as HsError).code, "InvalidArgument");
        assert.ok(!(e as Error).message.includes("s3cr3t"));
        return true;
      });
    }
  } finally { c.close(); }
});

test("status converts the tree; AccessService validates keys and roles", async () => {
  const c = nestClient();
  const a = createClient(AccessService, socket);
  try {
    const res = await c.status({});
    assert.deepEqual(fromProtoStatus(res.root!), status);
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUior/yFiHwf7dVs9i+UMwnIErNEGBd9Hecguw1gebb op@host";
    const added = await a.addKey({ key: { publicKey: key, role: KeyRole.CONTROLLER } });
    assert.equal(added.key?.comment, "op@host");
    await assert.rejects(a.addKey({ key: { publicKey: key, role: KeyRole.UNSPECIFIED } }), (e: unknown) => (e as HsError).code === "InvalidArgument");
    await assert.rejects(a.addKey({ key: { publicKey: "not a key", role: KeyRole.READER } }), (e: unknown) => (e as HsError).code === "InvalidArgument");
    await assert.rejects(a.removeKey({}), (e: unknown) => (e as HsError).code === "InvalidArgument");
  } finally { c.close(); a.close(); }
});

test("a live socket is refused with DaemonRunning", async () => {
  await assert.rejects(startApiServer({ socketPath: socket, level, access: keys, log: silentLogger() }),
    (e: unknown) => e instanceof DaemonRunningError);
});

test("event conversion round-trips, durations in whole ms", () => {
  const full: LevelEvent = {
    levelPath: ["l0", "l1"], phase: "teardown", kind: "failed", time: 1_700_000_000_123, durationMs: 1500, budgetMs: 30_000,
    failure: { code: "PeerGone", message: "gone", hint: "h" }, message: "m", progress: { unit: "objects", done: 3, total: 9 },
    repos: [{ name: "tofu", servedCommit: "a", worktreeCommit: "b", dirty: true, dirtyFiles: ["x"], previousCommit: "c" }], bytes: 42,
  };
  assert.deepEqual(fromProtoEvent(toProtoEvent(full)), full);
  assert.equal(fromProtoEvent(toProtoEvent({ ...ev(1), durationMs: 1.6 })).durationMs, 2);
  assert.deepEqual(fromProtoStatus(toProtoStatus(status)), status);
});

test("close() ends running streams with Cancelled and removes the socket", async () => {
  const dir2 = await mkdtemp(join(tmpdir(), "hsd-api2-"));
  const sock2 = join(dir2, "hsd.sock");
  let started!: () => void;
  const startedP = new Promise<void>((r) => { started = r; });
  const s2 = await startApiServer({ socketPath: sock2, access: keys, log: silentLogger(), level: {
    ...level,
    async sync(_o, sink, signal) { sink(ev(0)); started(); await new Promise((r) => signal.addEventListener("abort", r, { once: true })); throw signal.reason; },
  } });
  const c = createClient(NestService, sock2);
  try {
    // Settled into a value at once: the stream fails while close() is still being awaited.
    const outcome = (async () => { for await (const _ of c.sync({})) { /* wait */ } })().then(() => undefined, (e: unknown) => e);
    await withTimeout(WAIT_MS, () => new HsError("sync never started"), () => startedP);
    await s2.close(WAIT_MS);
    const err = await outcome;
    assert.ok(err instanceof HsError);
    assert.equal(err.code, "Cancelled");
    await assert.rejects(fsAccess(sock2));
  } finally { c.close(); await rm(dir2, { recursive: true, force: true }); }
});

test("close(grace, reason) ends running calls with that reason, even when the handler fails with its own error (the machine going down)", async () => {
  const dir2 = await mkdtemp(join(tmpdir(), "hsd-api3-"));
  const sock2 = join(dir2, "hsd.sock");
  let started!: () => void;
  const startedP = new Promise<void>((r) => { started = r; });
  const s2 = await startApiServer({ socketPath: sock2, access: keys, log: silentLogger(), level: {
    ...level,
    // A handler that turns its abort into an error of its own (as a provider's call would).
    async sync(_o, sink, signal) { sink(ev(0)); started(); await new Promise((r) => signal.addEventListener("abort", r, { once: true })); throw new HsError("aborted mid-request"); },
  } });
  const c = createClient(NestService, sock2);
  try {
    const outcome = (async () => { for await (const _ of c.sync({})) { /* wait */ } })().then(() => undefined, (e: unknown) => e);
    await withTimeout(WAIT_MS, () => new HsError("sync never started"), () => startedP);
    await s2.close(WAIT_MS, new LevelWentDownError("level l1 went down"));
    const err = await outcome;
    assert.ok(err instanceof HsError);
    assert.equal(err.code, "LevelWentDown");
  } finally { c.close(); await rm(dir2, { recursive: true, force: true }); }
});
