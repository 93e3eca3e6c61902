// A PVE child's whole configure set-up (pve-wiring.ts pveConfigure) against the
// simulator as its own node: token, certificate and snippets, then its template
// from the image it holds, its provider's pin and homestak's record of the node
// (api_tokens and nodes/<name>.yaml, through the level's real site-config files).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { withSim } from "./helpers.js";
import { simCommandRunner } from "../pve-sim/sim-commands.js";
import { parseConfig } from "../../src/config/load-config.js";
import { PROVIDER_CONFIGS } from "../../src/providers/registry.js";
import { pveConfigure } from "../../src/providers/pve/pve-wiring.js";
import { SecretsStore } from "../../src/secrets/secrets-store.js";
import { ImageDigests } from "../../src/images/image-digest.js";
import { homestakLayout } from "../../src/homestak/layout.js";
import { SiteConfigFiles } from "../../src/homestak/site-config.js";
import { silentLogger } from "../../src/log/logger.js";
import type { LocalEvent } from "../../src/domain/events.js";
import type { CommandRunner } from "../../src/util/command-runner.js";

/** A fresh PVE level l1 on `sim` with image pve-9 (written now unless `imageLater`), and its configure step. */
async function freshLevel(sim: Parameters<Parameters<typeof withSim>[1]>[0], root: string, o: { imageLater?: boolean; commands?: CommandRunner; pinSha256?: boolean } = {}) {
  sim.tokens.delete("root@pam!hsd"); // a fresh level: the set-up makes its token
  const isoDir = join(sim.paths.vz, "template", "iso");
  const bytes = randomBytes(64 * 1024);
  const putImage = () => writeFile(join(isoDir, "pve-9.img"), bytes);
  if (!o.imageLater) await putImage();
  const config = parseConfig([
    "level: { name: l1, depth: 1 }",
    "parent: { host: 127.0.0.1, host_key_fingerprint: \"SHA256:abc\" }",
    `image_dir: ${isoDir}`,
    `images: { pve-9: { ${o.pinSha256 ? `sha256: ${createHash("sha256").update(bytes).digest("hex")}` : ""} } }`,
    `pve: { url: "${sim.url}", node: ${sim.node}, storage: local-lvm, snippet_storage: local, template: 9100, bridge: vmbr0, image: pve-9 }`,
    "",
  ].join("\n"), "hsd.yaml", { root, providers: PROVIDER_CONFIGS });
  const layout = homestakLayout(config);
  await mkdir(layout.configDir, { recursive: true });
  const stateDir = join(root, "state");
  await mkdir(stateDir, { recursive: true });
  const commands = o.commands ?? simCommandRunner(sim);
  const step = pveConfigure({
    config, stateDir, secrets: new SecretsStore(join(root, "secrets.yaml")), digests: new ImageDigests(join(stateDir, "digests.json"), silentLogger()),
    homestakFiles: new SiteConfigFiles({ layout, self: () => ({ name: "l1", publicKey: "ssh-ed25519 AAAAl1 hsd@l1" }) }),
    host: {
      commands, apiUrl: sim.url, hostname: sim.node, hostsFile: sim.paths.hostsFile, pveCertFile: sim.paths.certFile,
      resolveHost: async () => [], clientOptions: { proxyRetryBaseMs: 1 },
    },
  });
  return { step, layout, stateDir, putImage };
}

const tasksOf = (sim: { tasks: Map<string, { type: string; startedMs: number; endedMs?: number }> }, type: string) => [...sim.tasks.values()].filter((t) => t.type === type);

test("homestak's record of the node is written while the template's PVE tasks run, and logged after the template's checks", () =>
  withSim({ faults: { taskMs: 30_000 } }, async (sim) => { // each template task runs 300 ms
    const root = await mkdtemp(join(tmpdir(), "hsd-pve-configure-"));
    try {
      const { step, layout, stateDir } = await freshLevel(sim, root);
      const events: LocalEvent[] = [];
      await step.run((ev) => { events.push(ev); }, AbortSignal.timeout(60_000));

      assert.equal(sim.vms.get(9100)!.config.template, "1");
      const node = parse(await readFile(join(layout.configDir, "nodes", "l1.yaml"), "utf8"));
      assert.equal(node.api_token, "l1");
      const create = tasksOf(sim, "qmcreate")[0]!;
      const written = (await stat(join(layout.configDir, "nodes", "l1.yaml"))).mtimeMs;
      assert.ok(written < create.endedMs!, `nodes/l1.yaml written ${written - create.endedMs!} ms after the template's first task ended`);
      const lines = events.map((e) => e.message ?? "");
      const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
      assert.ok(at(/^template: repaired/) >= 0 && at(/^homestak: api_tokens\.l1/) > at(/^template: repaired/), lines.join("\n"));
      assert.equal(JSON.parse(await readFile(join(stateDir, "pve.json"), "utf8")).fingerprint, sim.fingerprint);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }));

test("begun at the handshake: the set-up runs at once, the template starts once the image is in, and configure joins both (one token, one template, every line once and in order)", () =>
  withSim({ faults: { taskMs: 30_000 } }, async (sim) => {
    const root = await mkdtemp(join(tmpdir(), "hsd-pve-configure-"));
    try {
      const sc = simCommandRunner(sim);
      let tokenAsked!: () => void;
      const asked = new Promise<void>((r) => { tokenAsked = r; });
      const commands: CommandRunner = async (argv, opts) => {
        const r = await sc(argv, opts);
        if (argv.slice(0, 4).join(" ") === "pveum user token add") tokenAsked();
        return r;
      };
      const { step, putImage } = await freshLevel(sim, root, { imageLater: true, commands });
      let imagesIn!: (ok: boolean) => void;
      const underWay = step.begin!(AbortSignal.timeout(60_000), new Promise<boolean>((r) => { imagesIn = r; }));
      // The set-up does not wait for the image: the token is made while it is still on its way.
      await asked;
      assert.equal(tasksOf(sim, "qmcreate").length, 0, "no template before its image is in");
      await putImage();
      imagesIn(true);
      await underWay; // the first sync's repos go now
      assert.equal(tasksOf(sim, "qmcreate").length, 1, "the template's create task is under way once begin's promise settles");
      assert.equal(sim.vms.get(9100)?.config.template, undefined, "and not finished: configure has not been asked yet");

      const events: LocalEvent[] = [];
      await step.run((ev) => { events.push(ev); }, AbortSignal.timeout(60_000));
      assert.equal(sim.vms.get(9100)!.config.template, "1");
      assert.equal(sc.calls.filter((c) => c.startsWith("pveum user token add")).length, 1, "the token was made once");
      assert.equal(tasksOf(sim, "qmcreate").length, 1, "the template was made once");
      const lines = events.map((e) => e.message ?? "");
      const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
      for (const re of [/^hostname: /, /^token: repaired/, /^creating template 9100/, /^template: repaired/, /^homestak: api_tokens\.l1/]) {
        assert.equal(lines.filter((l) => re.test(l)).length, 1, `${re} once in:\n${lines.join("\n")}`);
      }
      assert.ok(at(/^token: repaired/) < at(/^creating template 9100/) && at(/^creating template 9100/) < at(/^template: repaired/)
        && at(/^template: repaired/) < at(/^homestak: api_tokens\.l1/), lines.join("\n"));
      assert.ok(events.every((e) => e.phase === "configure"));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }));

test("begun ahead with the image's sha256 in config: the template's slot is asked while the image is on its way, and neither it nor PVE's version again", () =>
  withSim({ faults: { taskMs: 1_000 } }, async (sim) => {
    const root = await mkdtemp(join(tmpdir(), "hsd-pve-configure-"));
    try {
      const { step, putImage } = await freshLevel(sim, root, { imageLater: true, pinSha256: true });
      let imagesIn!: (ok: boolean) => void;
      const underWay = step.begin!(AbortSignal.timeout(60_000), new Promise<boolean>((r) => { imagesIn = r; }));
      const slotReads = () => sim.requests.filter((q) => q.method === "GET" && q.path === `/nodes/${sim.node}/qemu/9100/config`);
      // Waits on the simulator's record of the request (bounded: a read never asked fails the test).
      for (const t0 = Date.now(); slotReads().length === 0;) {
        assert.ok(Date.now() - t0 < 20_000, "the template's slot was not read while the image was on its way");
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(tasksOf(sim, "qmcreate").length, 0, "no template before its image is in");
      await putImage();
      imagesIn(true);
      await underWay;
      await step.run(() => {}, AbortSignal.timeout(60_000));
      assert.equal(sim.vms.get(9100)!.config.template, "1");
      const create = sim.requests.find((q) => q.method === "POST" && q.path === `/nodes/${sim.node}/qemu`)!;
      assert.equal(slotReads().filter((q) => q.at <= create.at).length, 1, "the slot read ahead is the one the create went by");
      // The set-up's API check asked PVE's version; the template's checks take that answer.
      assert.equal(sim.requests.filter((q) => q.method === "GET" && q.path === "/version" && q.at <= create.at).length, 1);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }));

test("begun ahead: images that did not get in leave the template to configure; a set-up that failed ahead is run again by configure", () =>
  withSim({ faults: { taskMs: 1_000 } }, async (sim) => {
    const root = await mkdtemp(join(tmpdir(), "hsd-pve-configure-"));
    try {
      const sc = simCommandRunner(sim);
      let pveumFails = 1;
      const commands: CommandRunner = async (argv, opts) => {
        if (argv[0] === "pveum" && pveumFails-- > 0) return { code: 2, stdout: "", stderr: "ipcc_send_rec[1] failed: Connection refused\n" };
        return sc(argv, opts);
      };
      const { step, putImage } = await freshLevel(sim, root, { imageLater: true, commands });
      // The sync's images failed: begin's promise settles (the repos go) with nothing made.
      await step.begin!(AbortSignal.timeout(60_000), Promise.resolve(false));
      assert.equal(tasksOf(sim, "qmcreate").length, 0);
      assert.equal(sc.calls.filter((c) => c.startsWith("pveum user token add")).length, 0, "the set-up ahead failed at its token");
      await putImage(); // a later sync brought it
      const events: LocalEvent[] = [];
      await step.run((ev) => { events.push(ev); }, AbortSignal.timeout(60_000));
      assert.equal(sim.vms.get(9100)!.config.template, "1");
      assert.equal(sc.calls.filter((c) => c.startsWith("pveum user token add")).length, 1, "configure made the token");
      assert.equal(tasksOf(sim, "qmcreate").length, 1);
      // begin after configure has run is a no-op.
      await step.begin!(AbortSignal.timeout(60_000), Promise.resolve(true));
      assert.equal(tasksOf(sim, "qmcreate").length, 1);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }));
