// The parent's wait for a child's announced reboot (src/nest/reboot-wait.ts),
// against scripted links: an announced reboot is waited out and the call made
// again; a drop without an announcement, a changed host key while waiting, and
// a child that never returns within the budget each end it with their own code.
// (The real thing, over real processes and tunnels: test/e2e/nest-reboot.test.ts.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { callAcrossReboots } from "../../src/nest/reboot-wait.js";
import type { ChildLink } from "../../src/nest/child-link.js";
import type { EventSink, LevelEvent } from "../../src/domain/events.js";
import { HostKeyMismatchError, HsError, PeerGoneError, PhaseTimeoutError } from "../../src/domain/errors.js";
import { silentLogger } from "../../src/log/logger.js";

const ev = (kind: LevelEvent["kind"], message: string): LevelEvent => ({ levelPath: ["l2"], phase: "configure", kind, time: 0, message });

/** A child whose successive connections behave as scripted: "down" refuses, a function is one configure call. */
function scripted(script: (("down" | "mismatch" | ((sink: EventSink) => Promise<void>)))[]) {
  let i = 0;
  let current: (typeof script)[number] | undefined;
  const calls: string[] = [];
  const link = async (): Promise<ChildLink> => {
    current ??= script[Math.min(i++, script.length - 1)];
    if (current === "down") { current = undefined; throw new PeerGoneError("connection refused"); }
    if (current === "mismatch") { current = undefined; throw new HostKeyMismatchError("host key changed"); }
    const run = current;
    return {
      identify: async () => ({ name: "l2", depth: 2, hsdVersion: "x", publicKey: "", hostKeyFingerprint: "", sshAddress: "", repos: [] }),
      configure: async (sink: EventSink) => { calls.push("configure"); await run(sink); },
    } as unknown as ChildLink;
  };
  return { link, dropLink: async () => { current = undefined; }, calls };
}

function call(s: ReturnType<typeof scripted>, signal = new AbortController().signal) {
  const relayed: LevelEvent[] = [];
  const notes: string[] = [];
  const p = callAcrossReboots({
    child: "l2", link: s.link, dropLink: s.dropLink, relay: (e) => relayed.push(e), note: (m) => notes.push(m), signal,
    log: silentLogger(), now: () => 0, pollMs: 1, call: (l, sink, sig) => l.configure(sink, sig),
  });
  return { p, relayed, notes };
}

test("an announced reboot: the stream ends, the child is down a while, then the call attaches again and finishes", async () => {
  const s = scripted([
    async (sink) => { sink(ev("log", "kernel")); sink(ev("rebooting", "step install: kernel")); },
    "down", "down",
    async (sink) => { sink(ev("log", "packages")); },
  ]);
  const r = call(s);
  await r.p;
  assert.deepEqual(r.relayed.map((e) => e.message), ["kernel", "step install: kernel", "packages"]);
  assert.deepEqual(s.calls, ["configure", "configure"]);
  assert.equal(r.notes.length, 2);
  assert.match(r.notes[0]!, /rebooting; waiting/);
  assert.match(r.notes[1]!, /back after .* re-attaching/);
});

test("an announcement followed by a drop is waited out too; the old boot refusing a call meanwhile is not the child gone", async () => {
  const s = scripted([
    async (sink) => { sink(ev("rebooting", "step install: kernel")); throw new PeerGoneError("dropped"); },
    async () => { throw new PeerGoneError("server shutting down"); },
    async (sink) => { sink(ev("log", "resumed")); },
  ]);
  const r = call(s);
  await r.p;
  assert.deepEqual(s.calls, ["configure", "configure", "configure"]);
});

test("a drop without an announcement is PeerGone; a changed host key while waiting is HostKeyMismatch; never back is the budget's PhaseTimeout", async () => {
  const gone = call(scripted([async (sink) => { sink(ev("log", "working")); throw new PeerGoneError("dropped"); }]));
  await assert.rejects(gone.p, (e: unknown) => e instanceof HsError && e.code === "PeerGone");

  const other = call(scripted([async (sink) => { sink(ev("rebooting", "r")); }, "down", "mismatch"]));
  await assert.rejects(other.p, (e: unknown) => e instanceof HsError && e.code === "HostKeyMismatch");

  const ac = new AbortController();
  const never = call(scripted([async (sink) => { sink(ev("rebooting", "r")); }, "down"]), ac.signal);
  await new Promise((r) => setImmediate(r));
  ac.abort(new PhaseTimeoutError("configure overran its budget"));
  await assert.rejects(never.p, (e: unknown) => e instanceof HsError && e.code === "PhaseTimeout");
});

test("rebootBudgetMs (a sync wave's call, no phase budget on its signal): a child never back after its announcement is PhaseTimeout; none before it", async () => {
  const s = scripted([async (sink) => { sink(ev("log", "working")); }]);
  // No announcement: the budget never starts, the call simply ends.
  assert.equal(await callAcrossReboots({
    child: "l2", link: s.link, dropLink: s.dropLink, relay: () => {}, note: () => {}, signal: new AbortController().signal,
    log: silentLogger(), now: () => 0, pollMs: 1, rebootBudgetMs: 1, call: (l, sink, sig) => l.configure(sink, sig),
  }), 0);
  const never = scripted([async (sink) => { sink(ev("rebooting", "r")); }, "down"]);
  await assert.rejects(callAcrossReboots({
    child: "l2", link: never.link, dropLink: never.dropLink, relay: () => {}, note: () => {}, signal: new AbortController().signal,
    log: silentLogger(), now: () => 0, pollMs: 1, rebootBudgetMs: 50, call: (l, sink, sig) => l.configure(sink, sig),
  }), (e: unknown) => e instanceof HsError && e.code === "PhaseTimeout" && e.details.budgetMs === 50);
});
