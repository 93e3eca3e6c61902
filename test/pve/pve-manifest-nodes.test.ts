// Manifest nodes on the pve provider, against the simulator (PVE's answers,
// every call checked against PVE's schema): a node's image picks the template
// it is cloned from (one per image, found or made in the block from
// pve.template, never touching another VM), its disk is grown with resize,
// and `type: vm` leaves are built, configured by this level, reconfigured and
// destroyed by the real nest engine.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { withSim, clientFor, FAST_POLL, providerFor, phaseCtx, rejection, schemaViolations, type Emitted } from "./helpers.js";
import type { PveSim } from "../pve-sim/pve-sim.js";
import { templateForImage, TEMPLATE_SLOTS, type HeldImages } from "../../src/providers/pve/image-template.js";
import { templateMarker } from "../../src/providers/pve/child-preflight.js";
import { bootDisk, driveBytes } from "../../src/providers/pve/node-disk.js";
import { childPveImage } from "../../src/providers/pve/install-child.js";
import type { PlannedNode } from "../../src/domain/plan.js";
import { parseConfig } from "../../src/config/load-config.js";
import { NestEngine } from "../../src/nest/nest-engine.js";
import { Journal } from "../../src/nest/journal.js";
import { ChildLinks } from "../../src/nest/child-link.js";
import { silentLogger } from "../../src/log/logger.js";
import type { LevelEvent } from "../../src/domain/events.js";
import type { ConfigureLeaf, LeafTarget } from "../../src/nest/phase-hook.js";
import { PeerGoneError } from "../../src/domain/errors.js";

/** An image file in the node's iso directory, as a level holds it. */
async function image(sim: PveSim, name: string): Promise<{ name: string; path: string; sha256: string }> {
  const bytes = Buffer.concat([Buffer.from([0x51, 0x46, 0x49, 0xfb]), randomBytes(32 * 1024)]);
  const path = join(sim.paths.vz, "template", "iso", `${name}.img`);
  await writeFile(path, bytes);
  return { name, path, sha256: createHash("sha256").update(bytes).digest("hex") };
}

function held(...imgs: { name: string; path: string; sha256: string }[]): HeldImages {
  return { entries: Object.fromEntries(imgs.map((i) => [i.name, { path: i.path }])), sha256: async (p) => imgs.find((i) => i.path === p)!.sha256 };
}

const node = (over: Partial<PlannedNode> & { name: string }): PlannedNode => ({
  type: "pve", spec: "pve", preset: "vm-small", image: "pve-9", vmid: 0, cores: 2, memoryMb: 2048, diskGb: 0, ...over,
});

test("templates per image: found by marker in the block from pve.template, made at its lowest free vmid, other VMs untouched", () =>
  withSim({}, async (sim) => {
    const deb = await image(sim, "debian-12");
    const client = clientFor(sim);
    // 9000: the operator's template (no marker); 9001: someone else's VM.
    sim.vms.set(9001, { vmid: 9001, status: "stopped", config: { name: "hsd-debian-12", memory: "512" } });
    const before = structuredClone([sim.vms.get(9000)!.config, sim.vms.get(9001)!.config]);
    const opts = {
      client, node: sim.node, base: 9000, image: deb, storage: "local-lvm", bridge: "vmbr0",
      importStorage: "local", task: FAST_POLL, log: () => {},
    };
    assert.deepEqual(await templateForImage(opts), { vmid: 9002, made: "created" });
    assert.match(sim.vms.get(9002)!.config.description!, new RegExp(templateMarker(deb)));
    assert.deepEqual(await templateForImage(opts), { vmid: 9002, made: "kept" });
    // Another copy of debian-12 (another sha256): its own template, the old one left for its linked clones.
    const newer = { ...deb, sha256: "f".repeat(64) };
    assert.deepEqual(await templateForImage({ ...opts, image: newer }), { vmid: 9003, made: "created" });
    assert.deepEqual([sim.vms.get(9000)!.config, sim.vms.get(9001)!.config], before);
    assert.equal(sim.vms.get(9002)!.config.template, "1");
    // A full block is a typed error, not a vmid outside it.
    for (let v = 9004; v < 9000 + TEMPLATE_SLOTS; v++) sim.vms.set(v, { vmid: v, status: "stopped", config: { name: `x${v}` } });
    const err = await rejection(templateForImage({ ...opts, image: { ...deb, name: "debian-13" } }));
    assert.equal(err.code, "PreflightFailed");
    assert.deepEqual(schemaViolations(sim.requests), []);
  }));

test("a manifest node on PVE: its image's template, fixed vmid, preset size, disk grown with resize; pve.image clones pve.template", () =>
  withSim({}, async (sim) => {
    const [pve9, deb, deb13] = [await image(sim, "pve-9"), await image(sim, "debian-12"), await image(sim, "debian-13")];
    const { provider } = providerFor(sim, { images: held(pve9, deb, deb13) }, { image: "pve-9" });
    const events: Emitted[] = [];
    const ctx = phaseCtx(events);
    // Siblings at once: two of one image share one template; another image gets its own vmid.
    const [a, b] = await Promise.all([
      provider.provision("edge", 1, ctx, node({ name: "edge", type: "vm", spec: "base", image: "debian-12", vmid: 99031, cores: 1, memoryMb: 1024, diskGb: 10 })),
      provider.provision("edge2", 1, ctx, node({ name: "edge2", type: "vm", image: "debian-12", vmid: 99032, diskGb: 10 })),
      provider.provision("edge3", 1, ctx, node({ name: "edge3", type: "vm", image: "debian-13", vmid: 99033 })),
    ]);
    const templates = [...sim.vms.values()].filter((v) => v.config.template === "1" && v.vmid !== 9000).sort((x, y) => x.vmid - y.vmid);
    assert.deepEqual(templates.map((t) => [t.vmid, t.config.name]), [[9001, "hsd-debian-12"], [9002, "hsd-debian-13"]]);
    assert.equal(sim.imports.length, 2);
    const clones = sim.requests.filter((r) => r.method === "POST" && r.template === "/nodes/{node}/qemu/{vmid}/clone" && r.status === 200).map((r) => `${r.params!.vmid}->${r.params!.newid}`);
    assert.deepEqual(clones.sort(), ["9001->99031", "9001->99032", "9002->99033"]);
    assert.deepEqual([a.data.vmid, b.data.vmid], [99031, 99032]);
    const edge = sim.vms.get(99031)!.config;
    assert.deepEqual([edge.cores, edge.memory, edge.name], ["1", "1024", "hsd-edge"]);
    assert.equal(bootDisk(edge), "scsi0");
    assert.equal(driveBytes(edge.scsi0!), 10 * 1024 ** 3);
    assert.match(edge.scsi0!, /,size=10G(,|$)/);
    assert.ok(events.some((e) => e.message === "growing scsi0 of VM 99031 to 10 GiB"));

    // A node of pve.image is cloned from pve.template (below level 0, the configure step made it there).
    await provider.provision("leaf-pve", 1, ctx, node({ name: "leaf-pve", vmid: 99021, diskGb: 3 }));
    assert.equal(sim.requests.filter((r) => r.template.endsWith("/clone")).at(-1)!.params!.vmid, "9000");
    // 3 GiB is the template's size already: no resize call.
    assert.equal(sim.requests.filter((r) => r.template.endsWith("/resize") && r.params!.vmid === "99021").length, 0);
    // A re-provision of a grown disk asks for the same absolute size: PVE does nothing.
    const again = await clientFor(sim).api("PUT /nodes/{node}/qemu/{vmid}/resize", { node: sim.node, vmid: 99031, disk: "scsi0", size: "10G" }, {});
    await clientFor(sim).waitTask(again, FAST_POLL);
    assert.match(sim.vms.get(99031)!.config.scsi0!, /,size=10G(,|$)/);
    assert.deepEqual(schemaViolations(sim.requests), []);
  }));

test("an image this level does not hold, and a disk smaller than the template's, are typed errors that leave no VM", () =>
  withSim({}, async (sim) => {
    const deb = await image(sim, "debian-12");
    const { provider } = providerFor(sim, { images: held(deb) }, { image: "pve-9" });
    const ctx = phaseCtx();
    const notHeld = await rejection(provider.provision("x", 1, ctx, node({ name: "x", image: "debian-13", vmid: 99041 })));
    assert.equal(notHeld.code, "PreflightFailed");
    assert.equal(notHeld.details.image, "debian-13");
    const small = await rejection(provider.provision("y", 1, ctx, node({ name: "y", image: "pve-9", vmid: 99042, diskGb: 2 })));
    assert.equal(small.code, "ProviderFailed");
    assert.deepEqual([small.details.diskGb, small.details.disk], [2, "scsi0"]);
    assert.equal(sim.vms.has(99041) || sim.vms.has(99042), false);
    // Without images at all, every node clones pve.template (the operator's), whatever its image.
    const { provider: bare } = providerFor(sim, {}, { image: "pve-9" });
    await bare.provision("z", 1, ctx, node({ name: "z", image: "debian-13", vmid: 99043 }));
    assert.equal(sim.requests.filter((r) => r.template.endsWith("/clone")).at(-1)!.params!.vmid, "9000");
  }));

test("the simulator's resize is PVE's: a task whose worker refuses shrinking, a cdrom, a missing disk and a locked VM", () =>
  withSim({}, async (sim) => {
    const c = clientFor(sim);
    const resize = async (vmid: number, disk: string, size: string) => {
      const upid = await c.api("PUT /nodes/{node}/qemu/{vmid}/resize", { node: sim.node, vmid, disk: disk as "scsi0", size }, {});
      return c.waitTask(upid, FAST_POLL).then(() => "OK", (e: { details: { exitstatus?: string } }) => String(e.details.exitstatus));
    };
    sim.vms.set(150, { vmid: 150, status: "stopped", config: { scsi0: "local-lvm:vm-150-disk-0,size=3G", ide2: "local-lvm:vm-150-cloudinit,media=cdrom" } });
    assert.equal(await resize(150, "scsi0", "2G"), "shrinking disks is not supported");
    assert.equal(await resize(150, "ide2", "+1G"), "you can't resize a cdrom");
    assert.equal(await resize(150, "scsi1", "+1G"), "disk 'scsi1' does not exist");
    assert.equal(await resize(150, "scsi0", "+512M"), "OK");
    assert.equal(sim.vms.get(150)!.config.scsi0, "local-lvm:vm-150-disk-0,size=3584M");
    assert.equal(await resize(150, "scsi0", "4G"), "OK");
    assert.equal(sim.vms.get(150)!.config.scsi0, "local-lvm:vm-150-disk-0,size=4G");
    sim.vms.get(150)!.config.lock = "backup";
    assert.equal(await resize(150, "scsi0", "5G"), "VM is locked (backup)");
  }));

/** The nest engine of a PVE level whose leaves (debian-12) `configureLeaf` configures; its journal in `dir`. */
async function leafEngine(sim: PveSim, dir: string, configureLeaf: ConfigureLeaf): Promise<{ engine: NestEngine; journal: Journal }> {
  const deb = await image(sim, "debian-12");
  const { provider } = providerFor(sim, { images: held(deb) }, { image: "pve-9" });
  const config = parseConfig(`images:\n  debian-12: { path: ${deb.path} }\n`, "test.yaml", { root: dir });
  const journal = new Journal(join(dir, "journal.json"));
  await journal.load();
  const engine = new NestEngine({
    config, journal, log: silentLogger(), clock: { now: () => Date.now() },
    links: new ChildLinks(async (name) => { throw new PeerGoneError(`a leaf has no hsd to link to (${name})`); }),
    self: () => ({ name: "leaf-pve", depth: 2, publicKey: "ssh-ed25519 AAAAp", sshPort: 2222, sshAdvertiseHost: "10.0.0.2", hostKeyFingerprint: "SHA256:p", hostKey: "" }),
    providers: () => provider,
    access: { async addKey() { throw new Error("a leaf authorizes no key"); }, async removeKey() { return true; }, async listKeys() { return []; } },
    readSecrets: async () => ({}),
    configureLeaf,
  });
  return { engine, journal };
}

test("PVE leaves through the nest engine: created and booted here, configured by this level, reconfigured, destroyed", () =>
  withSim({}, async (sim) => {
    const dir = await mkdtemp(join(tmpdir(), "hsd-pve-leaves-"));
    try {
      const configured: LeafTarget[] = [];
      const { engine, journal } = await leafEngine(sim, dir, async (leaf, emit) => {
        configured.push(leaf);
        emit({ kind: "log", message: `configured ${leaf.name} at ${leaf.address}` });
        return {};
      });
      const plan = {
        manifest: "n3-deep", onError: "stop" as const,
        nodes: [node({ name: "edge", type: "vm", spec: "base", image: "debian-12", vmid: 99031, diskGb: 10 })],
      };
      const events: LevelEvent[] = [];
      await engine.nest({ depth: 1, width: 1, provider: "pve", options: {}, plan }, (e) => events.push(e), AbortSignal.timeout(60_000));
      const phases = events.filter((e) => e.kind === "finished").map((e) => e.phase);
      assert.deepEqual(phases, ["preflight", "provision", "boot", "configure"]);
      assert.deepEqual(configured.map((l) => [l.name, l.address, l.spec, l.manifest, l.handle.data.vmid]), [["edge", sim.guestAddress(99031), "base", "n3-deep", 99031]]);
      const vm = sim.vms.get(99031)!;
      assert.equal(vm.status, "running");
      assert.match(vm.config.scsi0!, /,size=10G(,|$)/);
      const rec = journal.child("edge")!;
      assert.deepEqual([rec.state, rec.node?.type, rec.endpoint, rec.publicKey], ["ready", "vm", undefined, undefined]);

      // sync --configure reaches the leaf again; an image it does not hold is refused before anything is made.
      await engine.reconfigureLeaves(() => {}, AbortSignal.timeout(30_000));
      assert.equal(configured.length, 2);
      const bad = { ...plan, nodes: [node({ name: "edge-13", type: "vm", image: "debian-13", vmid: 99032 })] };
      await assert.rejects(engine.nest({ depth: 1, width: 1, provider: "pve", options: {}, plan: bad }, () => {}, AbortSignal.timeout(30_000)),
        (e: { code: string; details: { errors: { node: string; field: string }[] } }) =>
          e.code === "ManifestInvalid" && e.details.errors.some((x) => x.node === "edge-13" && x.field === "image"));
      assert.equal(sim.vms.has(99032), false);

      await engine.destroy(() => {}, AbortSignal.timeout(60_000));
      assert.equal(sim.vms.has(99031), false);
      assert.equal(journal.child("edge"), undefined);
      // The template stays: it is this level's, for the next leaf.
      assert.ok([...sim.vms.values()].some((v) => v.config.name === "hsd-debian-12" && v.config.template === "1"));
      assert.deepEqual(schemaViolations(sim.requests), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }));

test("a PVE leaf's step asks for its reboot: the engine shuts the VM down and starts it, waits for its address, then resumes the step", () =>
  withSim({}, async (sim) => {
    const dir = await mkdtemp(join(tmpdir(), "hsd-pve-leaf-reboot-"));
    try {
      // The steps as the runner journals them: the first run asks for a reboot, the resumed one finishes.
      const runs: { fresh: boolean; before: string | undefined; address: string }[] = [];
      const { engine, journal } = await leafEngine(sim, dir, async (leaf, emit, _signal, run) => {
          runs.push({ fresh: run.fresh, before: run.journal.steps().kernel?.kind, address: leaf.address });
          if (run.journal.steps().kernel?.kind === "rebooting") {
            await run.journal.updateSteps((st) => { st.kernel = { kind: "finished", at: Date.now(), reboots: 1 }; });
            return {};
          }
          await run.journal.updateSteps((st) => { st.kernel = { kind: "rebooting", at: Date.now(), reboots: 1, reason: "new kernel" }; });
          emit({ kind: "rebooting", message: "step kernel: new kernel" });
          return { reboot: { step: "kernel", reason: "new kernel", reboots: 1 } };
      });
      const plan = { manifest: "n3-deep", onError: "stop" as const, nodes: [node({ name: "edge", type: "vm", spec: "base", image: "debian-12", vmid: 99031 })] };
      const events: LevelEvent[] = [];
      await engine.nest({ depth: 1, width: 1, provider: "pve", options: {}, plan }, (e) => events.push(e), AbortSignal.timeout(60_000));
      const addr = sim.guestAddress(99031);
      assert.deepEqual(runs, [{ fresh: false, before: undefined, address: addr }, { fresh: false, before: "rebooting", address: addr }]);
      // Between the two runs: a clean shutdown (PVE stops it if the guest does not power off), a start, the agent's address again.
      const calls = sim.requests.filter((q) => q.status === 200 && q.params?.vmid === "99031").map((q) => `${q.method} ${q.template}`);
      const shutdown = calls.lastIndexOf("POST /nodes/{node}/qemu/{vmid}/status/shutdown");
      const start = calls.lastIndexOf("POST /nodes/{node}/qemu/{vmid}/status/start");
      assert.ok(shutdown >= 0 && start > shutdown, calls.join("\n"));
      assert.ok(calls.slice(start).includes("GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"), calls.join("\n"));
      const sd = sim.requests.find((q) => q.template.endsWith("/status/shutdown"))!;
      assert.deepEqual([sd.params!.forceStop, sd.params!.timeout], ["1", "120"]);
      assert.equal(sim.vms.get(99031)!.status, "running");
      const c = events.filter((e) => e.phase === "configure").map((e) => `${e.kind} ${e.message ?? ""}`.trim());
      assert.deepEqual([c[0], c[1], c[2]], ["started", "rebooting step kernel: new kernel", "log edge is rebooting; waiting for it to come back"]);
      assert.match(c.at(-2)!, /^log edge is back after \d+ s at [\d.]+; resuming its configure$/);
      assert.equal(c.at(-1)!.split(" ")[0], "finished");
      assert.deepEqual(journal.child("edge")!.steps, { kernel: { kind: "finished", at: journal.child("edge")!.steps!.kernel!.at, reboots: 1 } });
      // This hsd died after journaling the reboot and before the leaf was back: the re-run reboots the leaf first, then resumes the step.
      await journal.update((j) => {
        const e = j.children.edge!;
        e.steps = { kernel: { kind: "rebooting", at: Date.now(), reboots: 1, reason: "new kernel" } };
        delete e.phases.configure;
        e.state = "failed";
      });
      const shutdowns = () => sim.requests.filter((q) => q.status === 200 && q.template.endsWith("/status/shutdown")).length;
      const before = shutdowns();
      runs.length = 0;
      await engine.nest({ depth: 1, width: 1, provider: "pve", options: {}, plan }, () => {}, AbortSignal.timeout(60_000));
      assert.deepEqual(runs.map((r) => r.before), ["rebooting"]);
      assert.equal(shutdowns(), before + 1);
      assert.deepEqual(schemaViolations(sim.requests), []);
      await engine.destroy(() => {}, AbortSignal.timeout(60_000));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }));

test("a child's pve.image: its parent's when it holds it (or holds nothing), else the first image it holds", () => {
  assert.equal(childPveImage("pve-9", { "pve-9": {}, "debian-12": {} }), "pve-9");
  assert.equal(childPveImage("pve-9", { "debian-13": {}, "debian-12": {} }), "debian-12");
  assert.equal(childPveImage("pve-9", {}), "pve-9");
  assert.equal(childPveImage("pve-9", undefined), "pve-9");
});
