// The pve provider's boot CD (src/providers/pve/boot-cd.ts) at provision, against
// the simulator: which children get one, what it holds, how the VM's config and
// cloud-init snippet name it, and that destroy removes it. The CD's script on a
// "VM" and the install that finds its hsd: ssh-bootstrap.test.ts; a whole nest
// through it: nest-pve-e2e.test.ts.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { providerFor, phaseCtx, type Emitted, withSim, schemaViolations } from "./helpers.js";
import type { ChildInstallSpec } from "../../src/providers/provider.js";
import { ADDRESS_PLACEHOLDER } from "../../src/providers/pve/boot-cd.js";
import { cdromDir, unpackCdroms } from "../pve-sim/sim-cloud-init.js";
import type { CommandRunner } from "../../src/util/command-runner.js";

let dir = "";
let bundlePath = "";
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "boot-cd-test-"));
  bundlePath = join(dir, "hsd-bundle.tar.gz");
  await writeFile(bundlePath, Buffer.from("not really a bundle, only its bytes matter here\n".repeat(100)));
});
after(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

const spec: ChildInstallSpec = {
  name: "l1", depth: 1, parentHost: "10.0.0.1", parentPort: 2222, parentHostKeyFingerprint: "SHA256:cGFyZW50aG9zdGtleQ",
  parentPublicKey: "ssh-ed25519 AAAA parent", repoNames: ["bootstrap", "site-config"], extraConfig: {},
};

const logs = (events: Emitted[]) => events.filter((e) => e.kind === "log").map((e) => e.message ?? "");

test("a child that will run hsd gets a boot CD: written while the clone runs, beside the cloud-init drive, mounted by the snippet's runcmd before the agent starts; destroy removes it", () =>
  // A clone of 300 s (3 s at the simulator's time scale): far longer than writing a CD of a few KB takes even on a loaded machine.
  withSim({ faults: { cloneMs: 300_000 } }, async (sim) => {
    const { provider } = providerFor(sim, { bundlePath });
    const events: Emitted[] = [];
    const h = await provider.provision("l1", 1, phaseCtx(events), undefined, spec);
    const vmid = Number(h.data.vmid);
    const iso = join(sim.paths.vz, "template/iso", `hsd-${vmid}.iso`);
    assert.equal(h.data.bootCd, iso);
    const clone = [...sim.tasks.values()].find((t) => t.type === "qmclone")!;
    assert.ok((await stat(iso)).mtimeMs < clone.endedMs!, "written before the clone ended");
    assert.equal((await stat(iso)).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(join(sim.paths.vz, "template/iso")), [`hsd-${vmid}.iso`], "no temp file left");
    const cfg = sim.vms.get(vmid)!.config;
    assert.equal(cfg.ide3, `local:iso/hsd-${vmid}.iso,media=cdrom`);
    assert.match(cfg.ide2!, /cloudinit/);

    // The runcmd mounts this CD's label and runs its script, before it enables the agent.
    const label = /^Volume id: (.+)$/m.exec(execFileSync("isoinfo", ["-d", "-i", iso], { encoding: "utf8" }))![1]!.trim();
    const user = parse(await readFile(join(sim.paths.vz, "snippets", `hsd-${vmid}.yaml`), "utf8")) as { runcmd: string[][] };
    assert.equal(user.runcmd.length, 2);
    assert.deepEqual(user.runcmd[0]!.slice(0, 2), ["sh", "-c"]);
    assert.match(user.runcmd[0]![2]!, new RegExp(`mount -o ro LABEL=${label} \\$d && sh \\$d/boot-install\\.sh`));
    assert.deepEqual(user.runcmd[1], ["systemctl", "enable", "--now", "qemu-guest-agent"]);

    // What it holds: this level's bundle as is, its sha256, the child's config (address to be filled in), the script.
    const vm = join(dir, `vm-${vmid}`);
    await unpackCdroms(vm, cfg, () => readFile(iso));
    const cd = join(cdromDir(vm), label);
    assert.deepEqual((await readdir(cd)).sort(), ["boot-install.sh", "bundle.sha256", "hsd-bundle.tar.gz", "hsd.yaml"]);
    assert.deepEqual(await readFile(join(cd, "hsd-bundle.tar.gz")), await readFile(bundlePath));
    assert.match(await readFile(join(cd, "bundle.sha256"), "utf8"), /^[0-9a-f]{64}\n$/);
    const config = parse(await readFile(join(cd, "hsd.yaml"), "utf8")) as { level: { name: string }; ssh: { advertise_host: string }; parent: { host: string } };
    assert.equal(config.level.name, "l1");
    assert.equal(config.ssh.advertise_host, ADDRESS_PLACEHOLDER);
    assert.equal(config.parent.host, "10.0.0.1");
    assert.match(await readFile(join(cd, "boot-install.sh"), "utf8"), /^#!\/bin\/sh\n/);
    assert.ok(logs(events).includes(`boot CD hsd-${vmid}.iso written: hsd installs itself during the VM's first boot`), logs(events).join("\n"));
    assert.deepEqual(schemaViolations(sim.requests), []);

    await provider.destroy(h, phaseCtx());
    await assert.rejects(stat(iso));
  }));

test("no boot CD for a leaf, for a storage without iso content, or without genisoimage: a log line, no ide3, nothing left in the iso directory", () =>
  withSim({}, async (sim) => {
    const isoDir = join(sim.paths.vz, "template/iso");
    const noAgentCd = (user: string) => (parse(user) as { runcmd: string[][] }).runcmd.length === 1;

    // A leaf (no install spec): nothing to install.
    const { provider } = providerFor(sim, { bundlePath });
    const leaf = await provider.provision("leaf", 1, phaseCtx());
    assert.equal(sim.vms.get(Number(leaf.data.vmid))!.config.ide3, undefined);
    assert.ok(noAgentCd(await readFile(String(leaf.data.snippet), "utf8")));

    // genisoimage missing on the node.
    const real = providerFor(sim).commands;
    const without: CommandRunner = (argv, o) => argv[0] === "genisoimage" ? Promise.resolve({ code: 127, stdout: "", stderr: "genisoimage: not found\n" }) : real(argv, o);
    const events: Emitted[] = [];
    const noTool = await providerFor(sim, { bundlePath, commands: without }).provider.provision("l1", 1, phaseCtx(events), undefined, spec);
    assert.equal(sim.vms.get(Number(noTool.data.vmid))!.config.ide3, undefined);
    assert.equal(noTool.data.bootCd, undefined);
    assert.ok(logs(events).includes("no boot CD (genisoimage is not installed); hsd will be installed over SSH"), logs(events).join("\n"));
    assert.ok(noAgentCd(await readFile(String(noTool.data.snippet), "utf8")));

    // pve.snippet_storage without iso content.
    sim.storages.get("local")!.content = "vztmpl,backup,snippets";
    events.length = 0;
    const noIso = await provider.provision("l2", 1, phaseCtx(events), undefined, { ...spec, name: "l2" });
    assert.equal(sim.vms.get(Number(noIso.data.vmid))!.config.ide3, undefined);
    assert.ok(logs(events).includes("no boot CD: storage local holds no iso content; hsd will be installed over SSH"), logs(events).join("\n"));
    assert.deepEqual(await readdir(isoDir), []);
  }));
