// Unit tests of the nest engine with a fake provider and in-process child
// links (the true boundaries); the engine, journal and phase hooks are real.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load-config.js";
import { NestEngine } from "../../src/nest/nest-engine.js";
import { Journal } from "../../src/nest/journal.js";
import { ChildLinks, type ChildLink } from "../../src/nest/child-link.js";
import { silentLogger } from "../../src/log/logger.js";
import type { LevelEvent } from "../../src/domain/events.js";
import type { AuthorizedKey } from "../../src/domain/level-api.js";
import type { Provider } from "../../src/providers/provider.js";
import { PeerGoneError } from "../../src/domain/errors.js";
import { decodeLevelFiles } from "../../src/homestak/site-config.js";

interface Harness { dir: string; engine: NestEngine; journal: Journal; events: LevelEvent[]; keys: AuthorizedKey[]; removed: string[]; calls: string[]; alive: Set<string> }

async function harness(opts: {
  yaml?: string; link?: (name: string) => Partial<ChildLink>; aliveAfterInstall?: boolean; exportsReady?: () => Promise<void>;
  /** Each journal write's content, as it is about to be renamed into place. */
  onWrite?: (json: string) => void;
  /** The journal on disk before the engine loads it (a crashed run's). */
  journalText?: string;
  /** The public key the child's ready report names (the endpoint's publicKey); none by default. */
  readyKey?: (name: string) => string;
} = {}): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), "hsd-engine-"));
  const config = parseConfig(opts.yaml ?? "", "test.yaml", { root: dir });
  const onWrite = opts.onWrite;
  const journal = new Journal(join(dir, "journal.json"), onWrite ? { beforeRename: async (tmp) => onWrite(await readFile(tmp, "utf8")) } : {});
  const calls: string[] = [];
  const alive = new Set<string>();
  const provider: Provider = {
    name: "local",
    async preflight() { calls.push("preflight"); return [{ name: "x", result: "ok", detail: "" }]; },
    async provision(name) { calls.push(`provision ${name}`); return { name, data: { n: name } }; },
    async boot(h) { calls.push(`boot ${h.name}`); return { ...h, address: "127.0.0.1" }; },
    async install(h) { calls.push(`install ${h.name}`); alive.add(h.name); return { handle: h, endpoint: { host: "127.0.0.1", port: 1, hostKeyFingerprint: `SHA256:${h.name}`, ...(opts.readyKey ? { publicKey: opts.readyKey(h.name) } : {}) } }; },
    async alive(h) { return alive.has(h.name); },
    async destroy(h) { calls.push(`destroy ${h.name}`); alive.delete(h.name); },
  };
  const keys: AuthorizedKey[] = [];
  const removed: string[] = [];
  const links = new ChildLinks(async (name) => {
    if (!alive.has(name)) throw new PeerGoneError(`${name} gone`);
    const base: ChildLink = {
      async identify() { return { name, depth: 1, hsdVersion: "t", publicKey: `ssh-ed25519 AAAA${name}`, hostKeyFingerprint: `SHA256:${name}`, sshAddress: "x", repos: [] }; },
      async sync(_o, sink) { sink({ levelPath: [name], phase: "sync", kind: "finished", time: 0, repos: [{ name: "r", servedCommit: "c1", worktreeCommit: "c1", dirty: false, dirtyFiles: [] }] }); },
      async putSecrets() { return ["passwords", "ssh_keys"]; },
      async configure(sink) { sink({ levelPath: [name], phase: "configure", kind: "log", time: 0, message: "ok" }); },
      async nest(o, sink) { sink({ levelPath: [name, `deep${o.depth}`], phase: "provision", kind: "finished", time: 0 }); },
      async status() { throw new Error("unused"); },
      async doctor() { throw new Error("unused"); },
      logs() { throw new Error("unused"); },
      async destroy() {},
      async close() {},
    };
    return { ...base, ...(opts.link?.(name) ?? {}) };
  });
  const engine = new NestEngine({
    config, journal, links, log: silentLogger(), clock: { now: () => Date.now() },
    self: () => ({ name: "l0", depth: 0, publicKey: "ssh-ed25519 AAAAparent", sshPort: 2222, sshAdvertiseHost: "127.0.0.1", hostKeyFingerprint: "SHA256:p", hostKey: "" }),
    providers: () => provider,
    access: {
      async addKey(k) { const a = { ...k, fingerprint: "f", comment: k.comment ?? "" }; keys.push(a); return a; },
      async removeKey(sel) {
        removed.push(sel.publicKey ?? "");
        const at = keys.findIndex((k) => k.publicKey === sel.publicKey);
        if (at >= 0) keys.splice(at, 1);
        return at >= 0;
      },
      async listKeys() { return keys; },
    },
    readSecrets: async () => ({
      passwords: { vm_root: "pw" }, api_tokens: { l0: "root@pam!t=tok" }, auth: { signing_key: "sk" },
      ssh_keys: { operator: "ssh-ed25519 AAAAop op", self: "ssh-ed25519 AAAAparent" },
    }),
    readSite: async () => "defaults:\n  domain: d\n",
    ...(opts.exportsReady ? { exportsReady: opts.exportsReady } : {}),
  });
  if (opts.journalText !== undefined) await writeFile(join(dir, "journal.json"), opts.journalText);
  await journal.load();
  return { dir, engine, journal, events: [], keys, removed, calls, alive };
}

const opts = { depth: 2, width: 1, provider: "local" as const, options: { isolation: "process" } };

test("builds a child through every phase in order, relaying deeper events with the level path", async () => {
  const h = await harness();
  try {
    await h.engine.nest(opts, (e) => h.events.push(e), new AbortController().signal);
    const finished = h.events.filter((e) => e.kind === "finished" && e.levelPath.length === 2).map((e) => e.phase);
    assert.deepEqual(finished, ["preflight", "provision", "boot", "install", "handshake", "sync", "secrets", "configure", "nest"]);
    const deep = h.events.find((e) => e.levelPath.length === 3);
    assert.deepEqual(deep?.levelPath, ["l0", "l1", "deep1"]);
    assert.equal(h.keys[0]?.role, "reader");
    assert.equal(h.keys[0]?.publicKey, "ssh-ed25519 AAAAl1");
    const j = JSON.parse(await readFile(join(h.dir, "journal.json"), "utf8"));
    assert.equal(j.children.l1.state, "ready");
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("handshake: the key the child's ready report names is authorized before the child is asked who it is (its sync connects back at once); its answer confirms it", async () => {
  const seenAtIdentify: string[][] = [];
  let h: Harness | undefined;
  h = await harness({
    readyKey: (name) => `ssh-ed25519 AAAA${name} hsd@${name}`,
    link: (name) => ({
      async identify() {
        seenAtIdentify.push(h!.keys.map((k) => k.publicKey));
        return { name, depth: 1, hsdVersion: "t", publicKey: `ssh-ed25519 AAAA${name} hsd@${name}`, hostKeyFingerprint: `SHA256:${name}`, sshAddress: "x", repos: [] };
      },
    }),
  });
  try {
    await h.engine.nest(opts, () => {}, new AbortController().signal);
    assert.deepEqual(seenAtIdentify[0], ["ssh-ed25519 AAAAl1 hsd@l1"]);
    assert.deepEqual(h.keys.map((k) => [k.publicKey, k.role]), [["ssh-ed25519 AAAAl1 hsd@l1", "reader"]]);
    assert.deepEqual(h.removed, []);
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("handshake: a child whose answer names another key than its ready report: that key is revoked and the answered one authorized", async () => {
  const h = await harness({ readyKey: () => "ssh-ed25519 AAAAreported" });
  try {
    await h.engine.nest(opts, () => {}, new AbortController().signal);
    assert.deepEqual(h.removed, ["ssh-ed25519 AAAAreported"]);
    assert.deepEqual(h.keys.map((k) => k.publicKey), ["ssh-ed25519 AAAAl1"]);
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("handshake: a child that dies before it answers leaves no key authorized from its ready report", async () => {
  const h = await harness({
    readyKey: () => "ssh-ed25519 AAAAreported",
    link: (name) => ({ async identify() { throw new PeerGoneError(`${name} gone`); } }),
  });
  try {
    await assert.rejects(h.engine.nest(opts, () => {}, new AbortController().signal), (e: Error & { code?: string }) => e.code === "PeerGone");
    assert.deepEqual(h.removed, ["ssh-ed25519 AAAAreported"]);
    assert.deepEqual(h.keys, []);
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("the journal is written after each phase that leaves something to find; a redoable phase's finish rides the next write", async () => {
  const writes: { state: string; finished: string[] }[] = [];
  const h = await harness({
    onWrite: (json) => {
      const c = (JSON.parse(json) as { children: Record<string, { state: string; phases: Record<string, { kind: string }> }> }).children.l1!;
      writes.push({ state: c.state, finished: Object.keys(c.phases).filter((p) => c.phases[p]!.kind === "finished") });
    },
  });
  try {
    await h.engine.nest(opts, () => {}, new AbortController().signal);
    // preflight, boot and secrets (and the record before preflight) are not written on their own:
    // what is on disk is always a state the build passed through, each a prefix of the phase order.
    assert.deepEqual(writes.map((w) => w.finished.at(-1)), ["provision", "install", "handshake", "sync", "configure", "nest"]);
    assert.deepEqual(writes[0]!.finished, ["preflight", "provision"]);
    assert.deepEqual(writes[2]!.finished, ["preflight", "provision", "boot", "install", "handshake"]);
    assert.deepEqual(writes[4]!.finished.slice(-2), ["secrets", "configure"]);
    assert.equal(writes.at(-1)!.state, "ready");
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("a crash after a redoable phase, before the next write, resumes by running that phase again", async () => {
  const written: string[] = [];
  const first = await harness({ onWrite: (json) => written.push(json) });
  try {
    await first.engine.nest(opts, () => {}, new AbortController().signal);
  } finally { await rm(first.dir, { recursive: true, force: true }); }
  // The daemon died in boot or in install, before install's write: the journal is the one written after provision.
  const h = await harness({ journalText: written[0]! });
  try {
    const ev: LevelEvent[] = [];
    await h.engine.nest(opts, (e) => ev.push(e), new AbortController().signal);
    assert.deepEqual(ev.filter((e) => e.kind === "skipped").map((e) => e.phase), ["preflight", "provision"]);
    assert.deepEqual(h.calls, ["boot l1", "install l1"]);
    assert.equal(JSON.parse(await readFile(join(h.dir, "journal.json"), "utf8")).children.l1.state, "ready");
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("a re-run skips finished phases and does not rebuild a live child", async () => {
  const h = await harness();
  try {
    const sig = new AbortController().signal;
    await h.engine.nest(opts, () => {}, sig);
    h.calls.length = 0;
    const ev: LevelEvent[] = [];
    await h.engine.nest(opts, (e) => ev.push(e), sig);
    const skipped = ev.filter((e) => e.kind === "skipped").map((e) => e.phase);
    assert.deepEqual(skipped, ["preflight", "provision", "boot", "install", "handshake", "sync", "secrets", "configure"]);
    assert.deepEqual(h.calls, []);
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("a child that died is restarted from install; earlier phases are skipped", async () => {
  const h = await harness();
  try {
    const sig = new AbortController().signal;
    await h.engine.nest(opts, () => {}, sig);
    h.alive.delete("l1");
    h.calls.length = 0;
    const ev: LevelEvent[] = [];
    await h.engine.nest(opts, (e) => ev.push(e), sig);
    assert.deepEqual(ev.filter((e) => e.kind === "skipped").map((e) => e.phase), ["preflight", "provision", "boot"]);
    assert.deepEqual(h.calls, ["install l1"]);
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("a phase over its budget fails with PhaseTimeout naming level and phase, and the journal records it", async () => {
  const h = await harness({
    yaml: "budgets: { sync: 200ms }",
    link: () => ({ sync: (_o, _s, signal) => new Promise((_r, rej) => signal.addEventListener("abort", () => rej(signal.reason))) }),
  });
  try {
    await assert.rejects(h.engine.nest(opts, (e) => h.events.push(e), new AbortController().signal), (e: { code: string }) => e.code === "PhaseTimeout");
    const failed = h.events.find((e) => e.kind === "failed");
    assert.equal(failed?.phase, "sync");
    assert.deepEqual(failed?.levelPath, ["l0", "l1"]);
    assert.equal(failed?.failure?.code, "PhaseTimeout");
    assert.equal(failed?.budgetMs, 200);
    const j = JSON.parse(await readFile(join(h.dir, "journal.json"), "utf8"));
    assert.equal(j.children.l1.phases.sync.kind, "failed");
    assert.equal(j.children.l1.phases.handshake.kind, "finished");
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("a child gets site.yaml unchanged and homestak secrets scoped: no api_tokens, the parent's key under its name", async () => {
  let got = "";
  const h = await harness({ link: () => ({ async putSecrets(y: string) { got = y; return ["x"]; } }) });
  try {
    await h.engine.nest(opts, (e) => h.events.push(e), new AbortController().signal);
    const files = decodeLevelFiles(got, "test");
    assert.equal(files.site, "defaults:\n  domain: d\n");
    assert.deepEqual(files.secrets, {
      passwords: { vm_root: "pw" }, auth: { signing_key: "sk" },
      ssh_keys: { operator: "ssh-ed25519 AAAAop op", l0: "ssh-ed25519 AAAAparent" },
    });
    assert.doesNotMatch(got, /tok/);
    assert.ok(!JSON.stringify(h.events).includes("pw"), "secret value in an event");
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("with width, one child's failure does not stop its siblings", async () => {
  const h = await harness({ link: (name) => (name === "l1b" ? { async configure() { throw new PeerGoneError("boom"); } } : {}) });
  try {
    await assert.rejects(h.engine.nest({ ...opts, width: 3 }, (e) => h.events.push(e), new AbortController().signal));
    const ready = h.journal.children().filter((c) => c.state === "ready").map((c) => c.name);
    assert.deepEqual(ready, ["l1a", "l1c"]);
    assert.equal(h.journal.child("l1b")?.state, "failed");
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("destroy tears children down and is idempotent", async () => {
  const h = await harness();
  try {
    const sig = new AbortController().signal;
    await h.engine.nest(opts, () => {}, sig);
    await h.engine.destroy(() => {}, sig);
    assert.equal(h.journal.children().length, 0);
    assert.ok(h.calls.includes("destroy l1"));
    h.calls.length = 0;
    await h.engine.destroy(() => {}, sig);
    assert.deepEqual(h.calls, []);
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});

test("a child's phases before sync run while this level's repos are readied; its sync waits and fails with their error", async () => {
  let syncCalls = 0;
  let fail!: (e: unknown) => void;
  const reposReady = new Promise<void>((_res, rej) => { fail = rej; });
  const h = await harness({ link: () => ({ async sync() { syncCalls++; } }), exportsReady: () => reposReady });
  try {
    let atSync!: () => void;
    const reachedSync = new Promise<void>((res) => { atSync = res; });
    const run = h.engine.nest(opts, (e) => {
      h.events.push(e);
      if (e.phase === "sync" && e.kind === "started") atSync();
    }, new AbortController().signal);
    await reachedSync;
    assert.equal(syncCalls, 0, "sync must not reach the child before the repos are ready");
    const finished = h.events.filter((e) => e.kind === "finished").map((e) => e.phase);
    assert.deepEqual(finished, ["preflight", "provision", "boot", "install", "handshake"]);
    fail(Object.assign(new Error("secret in repo"), { code: "SecretInRepo" }));
    await assert.rejects(run);
    assert.equal(syncCalls, 0);
    const failed = h.events.find((e) => e.kind === "failed");
    assert.equal(failed?.phase, "sync");
  } finally { await rm(h.dir, { recursive: true, force: true }); }
});
