// PveProvider against the simulator: the lifecycle and each fault the seed and
// pve-api.md describe. Requests are read back from the simulator's record.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, access, stat } from "node:fs/promises";
import { startSim, providerFor, phaseCtx, TEST_KEY, type Emitted, withSim, rejection, schemaViolations } from "./helpers.js";
import type { PveSim, PveSimOptions } from "../pve-sim/pve-sim.js";
import { HsError } from "../../src/domain/errors.js";
import { agentPollPause, encodeSshKeys, pickGuestAddress } from "../../src/providers/pve/pve-provider.js";


test("lifecycle after a snippets repair: provision, boot, alive, destroy twice; every call valid in PVE's schema", () =>
  withSim({ faults: { snippetsDisabled: true } }, async (sim) => {
    const { provider } = providerFor(sim);
    const events: Emitted[] = [];
    const ctx = phaseCtx(events);
    const checks = await provider.preflight(ctx);
    assert.equal(checks.find((c) => c.name === "snippets")!.result, "repaired");

    const h = await provider.provision("l1", 1, ctx);
    const vmid = Number(h.data.vmid);
    const cfg = sim.vms.get(vmid)!.config;
    assert.equal(cfg.cpu, "host");
    assert.equal(cfg.cores, "2");
    assert.equal(cfg.memory, "2048");
    assert.match(cfg.net0!, /^virtio=BC:24:11:[0-9A-F:]+,bridge=vmbr0$/);
    assert.equal(cfg.agent, "1");
    assert.equal(cfg.ciupgrade, "0");
    assert.equal(cfg.ide2, "local-lvm:cloudinit");
    assert.equal(cfg.sshkeys, encodeSshKeys([TEST_KEY]));
    assert.equal(decodeURIComponent(cfg.sshkeys!), TEST_KEY);
    assert.equal(cfg.cicustom, `user=local:snippets/hsd-${vmid}.yaml`);
    assert.equal(cfg.lock, undefined);
    const snippet = await readFile(`${sim.paths.vz}/snippets/hsd-${vmid}.yaml`, "utf8");
    assert.ok(snippet.startsWith("#cloud-config\n") && snippet.includes(TEST_KEY));
    assert.ok(events.some((e) => e.kind === "progress" && e.message === `qmclone ${sim.templateVmid}: TASK OK`), "task logs streamed as progress");
    assert.ok(events.some((e) => e.kind === "progress"));

    const booted = await provider.boot(h, ctx);
    assert.equal(booted.address, sim.guestAddress(vmid));
    assert.equal(await provider.alive(h), true);

    await provider.destroy(h, ctx);
    assert.equal(sim.vms.has(vmid), false);
    await assert.rejects(access(`${sim.paths.vz}/snippets/hsd-${vmid}.yaml`));
    assert.equal(await provider.alive(h), false);
    const n = sim.requests.length;
    await provider.destroy(h, ctx);
    assert.deepEqual(sim.requests.slice(n).map((r) => `${r.method} ${r.template} ${r.status}`),
      ["GET /nodes/{node}/qemu/{vmid}/status/current 500"]);

    // Every call, parameters included, is valid on the oldest PVE release hsd supports.
    assert.deepEqual(schemaViolations(sim.requests), []);
    assert.ok(sim.requests.every((r) => r.params !== undefined) && sim.requests.length > 20);
    assert.ok(!sim.requests.some((r) => r.method === "PUT" && r.template.endsWith("/config")), "config is written async (POST)");
  }));

test("slow guest agent: boot keeps waiting through agent 500s, then proceeds", () => withSim({ faults: { agentDelayMs: 60_000 } }, async (sim) => {
  const { provider } = providerFor(sim);
  const events: Emitted[] = [];
  const h = await provider.provision("l1", 1, phaseCtx());
  const booted = await provider.boot(h, phaseCtx(events));
  assert.equal(booted.address, sim.guestAddress(Number(h.data.vmid)));
  const agent = sim.requests.filter((r) => r.template.endsWith("/agent/network-get-interfaces"));
  assert.ok(agent.length >= 2 && agent[0]!.status === 500 && agent.at(-1)!.status === 200);
  assert.ok(events.some((e) => e.kind === "log" && /QEMU guest agent is not running/.test(e.message ?? "")));
}));

test("agent polling: a call PVE held is followed after the short pause; quick answers are paced to the interval", () => {
  // While the agent is down PVE holds each call ~3 s: the next may follow at once.
  assert.equal(agentPollPause(3000, 1000, 100), 100);
  assert.equal(agentPollPause(950, 1000, 100), 100);
  assert.equal(agentPollPause(3000, 1000, 0), 0);
  // A quick 500 (VM not running yet, no agent configured) never makes a busy loop.
  assert.equal(agentPollPause(30, 1000, 100), 970);
  assert.equal(agentPollPause(0, 1000, 100), 1000);
});

test("agent polling on the simulator: calls start at least the interval apart, and never sooner than the pause after an answer", () =>
  withSim({ faults: { agentDelayMs: 20_000 }, timeScale: 0.02 }, async (sim) => {
    // A held call is 60 ms here (3 s at this scale): longer than the 40 ms interval.
    const { provider } = providerFor(sim, { agentPoll: { intervalMs: 40, minPauseMs: 15 } });
    const h = await provider.provision("l1", 1, phaseCtx());
    await provider.boot(h, phaseCtx());
    const agent = sim.requests.filter((r) => r.template.endsWith("/agent/network-get-interfaces"));
    assert.ok(agent.length >= 3 && agent.at(-1)!.status === 200);
    for (let i = 1; i < agent.length; i++) {
      // Date.now() is whole ms on both sides: 1 ms of slack for the rounding.
      assert.ok(agent[i]!.at - agent[i - 1]!.at >= 40 - 1, `call ${i} started ${agent[i]!.at - agent[i - 1]!.at} ms after the one before`);
      assert.ok(agent[i]!.at - agent[i - 1]!.answeredAt! >= 15 - 1, `call ${i} came ${agent[i]!.at - agent[i - 1]!.answeredAt!} ms after an answer`);
    }
  }));

test("clone lock: configuration waits for the clone task, never hits 'VM is locked'", () => withSim({ faults: { cloneMs: 40_000 } }, async (sim) => {
  const { provider } = providerFor(sim);
  const h = await provider.provision("l1", 1, phaseCtx());
  assert.equal(sim.vms.get(Number(h.data.vmid))!.config.cpu, "host");
  assert.deepEqual(sim.requests.filter((r) => r.status === 500), []);
  const iConfig = sim.requests.findIndex((r) => r.method === "POST" && r.template.endsWith("/config"));
  const cloneTask = [...sim.tasks.values()].find((t) => t.type === "qmclone")!;
  assert.equal(cloneTask.status, "stopped");
  const lastCloneStatus = sim.requests.map((r, i) => [r, i] as const).filter(([r]) => r.path === `/nodes/pve1/tasks/${cloneTask.upid}/status`).at(-1)![1];
  assert.ok(lastCloneStatus < iConfig);
}));

test("the cloud-init snippet is written while the clone task runs; the VM's config still waits for the clone", () =>
  withSim({ faults: { cloneMs: 40_000 } }, async (sim) => {
    const { provider } = providerFor(sim);
    const h = await provider.provision("l1", 1, phaseCtx());
    const vmid = Number(h.data.vmid);
    const cloneTask = [...sim.tasks.values()].find((t) => t.type === "qmclone")!;
    const written = (await stat(`${sim.paths.vz}/snippets/hsd-${vmid}.yaml`)).mtimeMs;
    assert.ok(written < cloneTask.endedMs!, `snippet written ${written - cloneTask.endedMs!} ms after the clone ended`);
    assert.equal(sim.vms.get(vmid)!.config.cicustom, `user=local:snippets/hsd-${vmid}.yaml`);
    assert.deepEqual(sim.requests.filter((r) => r.status === 500), []);
  }));

test("a clone that fails inside its task: PveTaskFailed, and neither the VM nor its snippet is left", () =>
  withSim({ faults: { cloneMs: 20_000, cloneError: "can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout" } }, async (sim) => {
    const { provider } = providerFor(sim);
    const err = await rejection(provider.provision("l1", 1, phaseCtx()));
    assert.equal(err.code, "PveTaskFailed");
    assert.deepEqual([...sim.vms.keys()], [sim.templateVmid]);
    const vmid = Number(sim.requests.find((r) => r.template.endsWith("/clone") && r.status === 200)!.params!.newid);
    await assert.rejects(access(`${sim.paths.vz}/snippets/hsd-${vmid}.yaml`));
  }));

test("596 on slow synchronous calls: the provider uses async variants and GET retries", () => withSim({}, async (sim) => {
  sim.faults.slowSync["PUT /nodes/{node}/qemu/{vmid}/config"] = { ms: 45_000 };
  sim.faults.slowSync["GET /nodes/{node}/qemu/{vmid}/status/current"] = { ms: 40_000, times: 1 };
  const { provider } = providerFor(sim);
  const h = await provider.provision("l1", 1, phaseCtx());
  await provider.boot(h, phaseCtx());
  assert.deepEqual(sim.requests.filter((r) => r.template.endsWith("/status/current")).map((r) => r.status), [596, 200]);
  assert.equal(await provider.alive(h), true);
  assert.ok(!sim.requests.some((r) => r.method === "PUT"));
}));

test("bad token: one clear PveAuth error, no retry loop", () => withSim({}, async (sim) => {
  const { provider } = providerFor(sim, { tokenSecret: "00000000-0000-0000-0000-000000000000" });
  const err = await rejection(provider.provision("l1", 1, phaseCtx()));
  assert.equal(err.code, "PveAuth");
  assert.equal(sim.requests.length, 1);
  assert.equal(sim.vms.size, 1);
}));

test("nextid collision: the clone's 'already exists' leads to a new id", () => withSim({ faults: { nextidCollisions: 2 } }, async (sim) => {
  const { provider } = providerFor(sim);
  const h = await provider.provision("l1", 1, phaseCtx());
  assert.equal(h.data.vmid, 102);
  const clones = sim.requests.filter((r) => r.template.endsWith("/clone")).map((r) => r.status);
  assert.deepEqual(clones, [500, 500, 200]);
}));

test("missing snippets content at provision: typed error and no leaked VM", () => withSim({ faults: { snippetsDisabled: true } }, async (sim) => {
  const { provider } = providerFor(sim);
  const err = await rejection(provider.provision("l1", 1, phaseCtx()));
  assert.equal(err.code, "ProviderFailed");
  assert.deepEqual([...sim.vms.keys()], [sim.templateVmid]);
}));

test("pickGuestAddress skips lo, loopback and link-local", () => {
  assert.equal(pickGuestAddress([
    { name: "lo", "ip-addresses": [{ "ip-address": "127.0.0.1", "ip-address-type": "ipv4" }] },
    { name: "eth0", "ip-addresses": [{ "ip-address": "fe80::1", "ip-address-type": "ipv6" }, { "ip-address": "169.254.3.4", "ip-address-type": "ipv4" }] },
  ]), undefined);
  assert.equal(pickGuestAddress([
    { name: "eth0", "ip-addresses": [{ "ip-address": "2001:db8::5", "ip-address-type": "ipv6" }, { "ip-address": "10.1.2.3", "ip-address-type": "ipv4" }] },
  ]), "10.1.2.3");
});

test("a manifest node's fixed vmid and preset size the VM; a taken vmid is VmidTaken, never renumbered", () => withSim({}, async (sim) => {
  const { provider } = providerFor(sim);
  const ctx = phaseCtx([]);
  const node = { name: "root-pve", type: "pve" as const, spec: "pve", preset: "vm-large", image: "pve-9", vmid: 99011, cores: 4, memoryMb: 8192, diskGb: 64 };
  const h = await provider.provision("root-pve", 1, ctx, node);
  assert.equal(Number(h.data.vmid), 99011);
  const cfg = sim.vms.get(99011)!.config;
  assert.equal(cfg.cores, "4");
  assert.equal(cfg.memory, "8192");
  const before = [...sim.vms.keys()].sort();
  const n = sim.requests.length;
  const err = await rejection(provider.provision("other", 1, ctx, { ...node, name: "other" }));
  assert.ok(err instanceof HsError);
  assert.equal(err.code, "VmidTaken");
  assert.deepEqual([...sim.vms.keys()].sort(), before);
  assert.ok(!sim.requests.slice(n).some((r) => r.template === "/cluster/nextid" || r.template.endsWith("/clone")), "no other vmid was tried");
  assert.deepEqual(schemaViolations(sim.requests), []);
}));
