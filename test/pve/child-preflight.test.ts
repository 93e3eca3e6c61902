// A PVE child's own preflight before it builds its template, against the
// simulator: the template vmid free or already this image's template (anything
// else fails, untouched), and room on pve.storage for the template's disk and
// a clone (a qcow2 counts by its virtual size).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { withSim, clientFor, FAST_POLL } from "./helpers.js";
import { childPreflight, type ChildPreflightDeps } from "../../src/providers/pve/child-preflight.js";
import { buildTemplate, ensureTemplate } from "../../src/providers/pve/ensure-template.js";
import { simCommandRunner } from "../pve-sim/sim-commands.js";
import type { PveSim } from "../pve-sim/pve-sim.js";

/** A qcow2 header (magic, version 3) whose disk is `virtualBytes`, then filler. */
function qcow2(virtualBytes: bigint): Buffer {
  const b = Buffer.concat([Buffer.alloc(104), randomBytes(4096)]);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(3, 4);
  b.writeBigUInt64BE(virtualBytes, 24);
  return b;
}

async function deps(sim: PveSim, bytes: Buffer, vmid = 9100): Promise<ChildPreflightDeps> {
  const path = join(sim.paths.vz, "template", "iso", "pve-9.img");
  await writeFile(path, bytes);
  return {
    client: clientFor(sim), commands: simCommandRunner(sim), node: sim.node, vmid, storage: "local-lvm",
    image: { name: "pve-9", path, sha256: createHash("sha256").update(bytes).digest("hex") }, signal: AbortSignal.timeout(30_000),
  };
}
const results = (checks: { name: string; result: string }[]) => Object.fromEntries(checks.map((c) => [c.name, c.result]));

test("a free vmid needs room for two disks (template and clone, a qcow2 by its virtual size); once the template is there, one", () =>
  withSim({ faults: { diskFreeKiB: 20 * 1024 * 1024 } }, async (sim) => {
    const d = await deps(sim, qcow2(12n << 30n)); // a 4 KiB file whose disk is 12 GiB: two do not fit in 20 GiB, one does
    let checks = await childPreflight(d);
    assert.deepEqual(results(checks), { "template-slot": "ok", "storage-room": "failed" });
    assert.match(checks[1]!.detail, /24\.0 GiB/);
    assert.match(checks[1]!.hint ?? "", /pve.storage/);
    await ensureTemplate({ ...d, bridge: "vmbr0", importStorage: "local", task: FAST_POLL, log: () => {} });
    checks = await childPreflight(d);
    assert.deepEqual(results(checks), { "template-slot": "ok", "storage-room": "ok" });
    assert.match(checks[0]!.detail, /already is the template of image pve-9/);
  }));

test("a vmid holding anything but this image's template fails with a hint and is not touched", () =>
  withSim({}, async (sim) => {
    const d = await deps(sim, randomBytes(64 * 1024), sim.templateVmid); // the operator's debian-12-tmpl
    const before = { ...sim.vms.get(sim.templateVmid)!.config };
    const checks = await childPreflight(d);
    assert.deepEqual(results(checks), { "template-slot": "failed", "storage-room": "ok" });
    assert.match(checks[0]!.hint ?? "", /pve\.template/);
    assert.deepEqual(sim.vms.get(sim.templateVmid)!.config, before);
    // A raw image counts by its file size: 64 KiB twice fits anywhere.
    assert.match(checks[1]!.detail, /0\.0 GiB needed/);
  }));

test("pvesm failing is a failed storage check naming the command to run, not a crash", () =>
  withSim({}, async (sim) => {
    const d = await deps(sim, randomBytes(1024));
    const checks = await childPreflight({ ...d, storage: "no-such-storage" });
    assert.equal(results(checks)["storage-room"], "failed");
    assert.match(checks[1]!.hint ?? "", /pvesm status --storage no-such-storage/);
  }));

test("a free vmid on PVE older than 8.2 (no `import` content type): the check fails with the upgrade hint before anything is changed", () =>
  withSim({ release: "8.1.4" }, async (sim) => {
    const d = await deps(sim, randomBytes(1024));
    const checks = await childPreflight(d);
    assert.equal(results(checks)["template-slot"], "failed");
    assert.match(checks[0]!.hint ?? "", /8\.2/);
    assert.equal(sim.requests.filter((r) => r.method !== "GET").length, 0);
    // The simulator refuses the content type as that release would.
    const put = await clientFor(sim).api("PUT /storage/{storage}", { storage: "local", content: "iso,import" }).then(() => 0, (e: { code?: string }) => e.code);
    assert.equal(put, "PveApi");
  }));

test("storage room is asked of the API's storage status while it answers about the template slot; no pvesm", () =>
  withSim({}, async (sim) => {
    const d = await deps(sim, randomBytes(64 * 1024));
    // Which calls had been answered when the storage status was asked.
    const answered: string[] = [];
    let answeredAtStatus: string[] | undefined;
    const api = d.client.api.bind(d.client);
    d.client.api = (async (endpoint: string, ...rest: unknown[]) => {
      if (endpoint === "GET /nodes/{node}/storage/{storage}/status") answeredAtStatus = [...answered];
      const r = await (api as (e: string, ...a: unknown[]) => Promise<unknown>)(endpoint, ...rest);
      answered.push(endpoint);
      return r;
    }) as typeof d.client.api;
    const commands = simCommandRunner(sim);
    const checks = await childPreflight({ ...d, commands });
    assert.deepEqual(results(checks), { "template-slot": "ok", "storage-room": "ok" });
    assert.deepEqual(answeredAtStatus, [], "the storage status waited for the template slot's answer");
    assert.deepEqual(commands.calls, []);
    assert.match(checks[1]!.detail, /76\.3 GiB free/);
  }));

test("storage status the API cannot give (a token without Datastore.Audit, ...): pvesm answers instead", () =>
  withSim({}, async (sim) => {
    const d = await deps(sim, randomBytes(64 * 1024));
    const api = d.client.api.bind(d.client);
    d.client.api = (async (endpoint: string, ...rest: unknown[]) => {
      if (endpoint === "GET /nodes/{node}/storage/{storage}/status") throw new Error("403 Permission check failed");
      return (api as (e: string, ...a: unknown[]) => Promise<unknown>)(endpoint, ...rest);
    }) as typeof d.client.api;
    const commands = simCommandRunner(sim);
    const checks = await childPreflight({ ...d, commands });
    assert.deepEqual(results(checks), { "template-slot": "ok", "storage-room": "ok" });
    assert.deepEqual(commands.calls, ["pvesm status --storage local-lvm"]);
  }));


test("building a template on a fresh level: the vmid's config is read once, and PVE's version is asked while that read is answered", () =>
  withSim({}, async (sim) => {
    const d = await deps(sim, qcow2(1n << 30n));
    // The slot's read answers slowly (100 ms): a version asked after it would arrive after that answer.
    sim.faults.slowSync["GET /nodes/{node}/qemu/{vmid}/config"] = { ms: 10_000, times: 1 };
    const checks = await buildTemplate({ ...d, bridge: "vmbr0", importStorage: "local", task: FAST_POLL, log: () => {} });
    assert.deepEqual(results(checks), { "template-slot": "ok", "storage-room": "ok", template: "repaired" });
    const slotReads = sim.requests.filter((r) => r.method === "GET" && r.path === `/nodes/${sim.node}/qemu/9100/config`);
    assert.equal(slotReads.length, 1, "the template's create asked again for a slot the checks had just read");
    const version = sim.requests.filter((r) => r.path === "/version");
    assert.equal(version.length, 1);
    assert.ok(version[0]!.at < slotReads[0]!.answeredAt!, "the version was asked only after the slot's answer");
    assert.equal(sim.vms.get(9100)!.config.template, "1");
  }));
