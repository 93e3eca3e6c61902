// A PVE child's whole configure set-up (pve-wiring.ts pveConfigure) against the
// simulator as its own node: token, certificate and snippets, then its template
// from the image it holds, its provider's pin and homestak's record of the node
// (api_tokens and nodes/<name>.yaml, through the level's real site-config files).

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
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

test("homestak's record of the node is written while the template's PVE tasks run, and logged after the template's checks", () =>
  withSim({ faults: { taskMs: 30_000 } }, async (sim) => { // each template task runs 300 ms
    sim.tokens.delete("root@pam!hsd"); // a fresh level: the set-up makes its token
    const root = await mkdtemp(join(tmpdir(), "hsd-pve-configure-"));
    try {
      const isoDir = join(sim.paths.vz, "template", "iso");
      await writeFile(join(isoDir, "pve-9.img"), randomBytes(64 * 1024));
      const config = parseConfig([
        "level: { name: l1, depth: 1 }",
        "parent: { host: 127.0.0.1, host_key_fingerprint: \"SHA256:abc\" }",
        `image_dir: ${isoDir}`,
        "images: { pve-9: {} }",
        `pve: { url: "${sim.url}", node: ${sim.node}, storage: local-lvm, snippet_storage: local, template: 9100, bridge: vmbr0, image: pve-9 }`,
        "",
      ].join("\n"), "hsd.yaml", { root, providers: PROVIDER_CONFIGS });
      const layout = homestakLayout(config);
      await mkdir(layout.configDir, { recursive: true });
      const stateDir = join(root, "state");
      await mkdir(stateDir, { recursive: true });
      const events: LocalEvent[] = [];
      await pveConfigure({
        config, stateDir, secrets: new SecretsStore(join(root, "secrets.yaml")), digests: new ImageDigests(join(stateDir, "digests.json"), silentLogger()),
        homestakFiles: new SiteConfigFiles({ layout, self: () => ({ name: "l1", publicKey: "ssh-ed25519 AAAAl1 hsd@l1" }) }),
        host: {
          commands: simCommandRunner(sim), apiUrl: sim.url, hostname: sim.node, hostsFile: sim.paths.hostsFile, pveCertFile: sim.paths.certFile,
          resolveHost: async () => [], clientOptions: { proxyRetryBaseMs: 1 },
        },
      })((ev) => { events.push(ev); }, AbortSignal.timeout(60_000));

      assert.equal(sim.vms.get(9100)!.config.template, "1");
      const node = parse(await readFile(join(layout.configDir, "nodes", "l1.yaml"), "utf8"));
      assert.equal(node.api_token, "l1");
      const create = [...sim.tasks.values()].find((t) => t.type === "qmcreate")!;
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
