// A PVE level's template from an image it holds, against the simulator (which
// answers like PVE and validates every call against PVE's schema): created
// through an import volume of the node's own storage, kept when it matches,
// never touching a VM that is not its template; absolute paths and iso
// volumes are refused as PVE refuses them for a token.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { withSim, clientFor, FAST_POLL, rejection, schemaViolations } from "./helpers.js";
import { ensureTemplate, type EnsureTemplateOptions } from "../../src/providers/pve/ensure-template.js";
import type { PveSim } from "../pve-sim/pve-sim.js";

async function setup(sim: PveSim, name = "pve-9") {
  const bytes = Buffer.concat([Buffer.from([0x51, 0x46, 0x49, 0xfb]), randomBytes(64 * 1024)]);
  const path = join(sim.paths.vz, "template", "iso", `${name}.img`);
  await writeFile(path, bytes);
  const image = { name, path, sha256: createHash("sha256").update(bytes).digest("hex") };
  const opts: EnsureTemplateOptions = {
    client: clientFor(sim), node: sim.node, vmid: 9100, image, storage: "local-lvm", bridge: "vmbr0",
    importStorage: "local", task: FAST_POLL, log: () => {},
  };
  return { image, opts };
}

test("a template is created from the node's own image (import-from an import volume), then kept on the next run", () =>
  withSim({}, async (sim) => {
    const { opts } = await setup(sim);
    assert.equal(await ensureTemplate(opts), "created");
    const cfg = sim.vms.get(9100)!.config;
    assert.equal(cfg.template, "1");
    assert.match(cfg.scsi0!, /^local-lvm:base-9100-disk-0,/);
    assert.match(cfg.ide2!, /^local-lvm:vm-9100-cloudinit,media=cdrom$/);
    assert.deepEqual([cfg.agent, cfg.serial0, cfg.vga, cfg.boot], ["1", "socket", "serial0", "order=scsi0"]);
    assert.ok(sim.storages.get("local")!.content.split(",").includes("import"));
    assert.ok(sim.storages.get("local")!.content.split(",").includes("snippets"), "enabling import dropped a content type");
    // The only import is the node's own file, hard-linked from the iso directory.
    assert.deepEqual(sim.imports.map((i) => i.file), [join(sim.paths.vz, "import", "pve-9.qcow2")]);
    assert.equal(await ensureTemplate(opts), "kept");
    assert.equal(sim.imports.length, 1);
    assert.deepEqual(schemaViolations(sim.requests), []);
  }));

test("a VM at the template's vmid that is not this image's template is never touched", () =>
  withSim({}, async (sim) => {
    const { opts } = await setup(sim);
    const err = await rejection(ensureTemplate({ ...opts, vmid: sim.templateVmid })); // the sim's level-0 template (another image)
    assert.equal(err.code, "PreflightFailed");
    assert.equal(sim.vms.get(sim.templateVmid)!.config.name, "debian-12-tmpl");
    assert.equal(sim.imports.length, 0);
  }));

test("the simulator refuses what PVE refuses a token: an absolute path, an iso volume, a file that is not on the node", () =>
  withSim({}, async (sim) => {
    const { opts } = await setup(sim);
    const c = opts.client;
    const create = (src: string) => rejection(c.api("POST /nodes/{node}/qemu", { node: sim.node, vmid: 9200, scsi0: `local-lvm:0,import-from=${src}` }, {}));
    assert.equal((await create(opts.image.path)).code, "PveApi");
    assert.equal((await create("local:iso/pve-9.img")).code, "PveApi");
    assert.equal((await create("local:import/elsewhere.qcow2")).code, "PveApi");
    assert.equal(sim.vms.has(9200), false);
    assert.equal(sim.imports.length, 0);
  }));
