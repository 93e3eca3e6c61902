// Preflight against the simulator and its command shims: each check's ok,
// repaired and failed paths, repairs observed in the simulator's state.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { startSim, providerFor, phaseCtx, withSim } from "./helpers.js";
import type { PveSim } from "../pve-sim/pve-sim.js";
import type { CheckResult as PreflightCheck } from "../../src/domain/checks.js";

const byName = (checks: PreflightCheck[]) => Object.fromEntries(checks.map((c) => [c.name, c]));

test("healthy node: every check ok, no host command that changes anything", () => withSim({}, async (sim) => {
  const { provider, commands } = providerFor(sim);
  const checks = await provider.preflight(phaseCtx());
  assert.deepEqual(checks.map((c) => [c.name, c.result]), [
    ["nested-virt", "ok"], ["hostname", "ok"], ["pveproxy-cert", "ok"], ["api", "ok"], ["node", "ok"],
    ["snippets", "ok"], ["template", "ok"], ["bridge", "ok"], ["disk-space", "ok"],
  ]);
  // The storage's free space is the API's answer (one call), not a pvesm start.
  assert.deepEqual([...commands.calls].sort(), ["ip link show vmbr0"]);
  assert.equal(sim.requests.filter((r) => r.template === "/nodes/{node}/storage/{storage}/status").length, 1);
}));

test("the host-only check (bridge) runs beside the API checks, the storage status beside the node, snippets and template checks; each reported in its place", () =>
  withSim({}, async (sim) => {
    const { commands } = providerFor(sim);
    // How many API requests the simulator had seen when each host command started.
    const seenAt: Record<string, number> = {};
    const spy: typeof commands = Object.assign((argv: Parameters<typeof commands>[0], o: Parameters<typeof commands>[1]) => {
      seenAt[argv.slice(0, 2).join(" ")] = sim.requests.length;
      return commands(argv, o);
    }, { calls: commands.calls });
    const { provider } = providerFor(sim, { commands: spy });
    const checks = await provider.preflight(phaseCtx());
    assert.deepEqual(seenAt, { "ip link": 0 });
    assert.deepEqual(checks.map((c) => c.name).slice(-2), ["bridge", "disk-space"]);
    // Asked right after /version answered, before the template check's config read.
    const order = sim.requests.map((r) => r.template);
    const at = order.indexOf("/nodes/{node}/storage/{storage}/status");
    assert.ok(at > order.indexOf("/version") && at < order.indexOf("/nodes/{node}/qemu/{vmid}/config"), order.join(" "));
  }));

test("storage without snippets: repaired by PUT of the FULL content list with digest", () => withSim({ faults: { snippetsDisabled: true } }, async (sim) => {
  const { provider } = providerFor(sim);
  const c = byName(await provider.preflight(phaseCtx())).snippets!;
  assert.equal(c.result, "repaired");
  assert.equal(sim.storages.get("local")!.content, "iso,vztmpl,backup,snippets");
  const put = sim.requests.filter((r) => r.method === "PUT");
  assert.deepEqual(put.map((r) => [r.template, r.status]), [["/storage/{storage}", 200]]);
  // A second run finds nothing to repair.
  assert.equal(byName(await provider.preflight(phaseCtx())).snippets!.result, "ok");
}));

test("zone-id SAN certificate: hosts entry + lesson-4 sequence through the shims, API re-pinned", () => withSim({ faults: { certZoneId: true } }, async (sim) => {
  const oldFp = sim.fingerprint;
  const { provider, commands } = providerFor(sim);
  const checks = byName(await provider.preflight(phaseCtx()));
  assert.equal(checks.hostname!.result, "repaired");
  assert.equal(checks["pveproxy-cert"]!.result, "repaired");
  assert.equal(checks.api!.result, "ok");
  assert.equal(checks.template!.result, "ok");
  const hosts = await readFile(sim.paths.hostsFile, "utf8");
  assert.match(hosts, /^10\.0\.0\.2 pve1\.lab\.example pve1\nfe80::1%vmbr0 /m);
  assert.deepEqual(commands.calls.filter((c) => !c.startsWith("ip ") && !c.startsWith("pvesm")), [
    "sysctl -w net.ipv6.conf.all.disable_ipv6=1", "pvecm updatecerts --force",
    "sysctl -w net.ipv6.conf.all.disable_ipv6=0", "systemctl restart pveproxy",
  ]);
  assert.ok(!sim.cert.subjectAltName.includes("%"));
  assert.notEqual(sim.fingerprint, oldFp);
  assert.equal(provider.client.fingerprint, sim.fingerprint);
  assert.equal(sim.proxyDown, false);
}));

test("failures carry hints: nested off, bridge missing, template missing, low disk", () =>
  withSim({ faults: { nested: "N", diskFreeKiB: 1024 }, bridges: ["vmbr1"], template: 9001 }, async (sim) => {
    const { provider } = providerFor(sim, {});
    sim.vms.delete(9001);
    const checks = byName(await provider.preflight(phaseCtx()));
    for (const name of ["nested-virt", "bridge", "template", "disk-space"]) {
      assert.equal(checks[name]!.result, "failed", name);
      assert.ok(checks[name]!.hint, `${name} has a hint`);
    }
    assert.equal(checks.api!.result, "ok");
  }));

test("bad token: api failed once with a hint, dependent checks not run, exactly one 401", () => withSim({}, async (sim) => {
  const { provider } = providerFor(sim, { tokenSecret: "00000000-0000-0000-0000-000000000000" });
  const checks = byName(await provider.preflight(phaseCtx()));
  assert.equal(checks.api!.result, "failed");
  assert.match(checks.api!.hint ?? "", /pveum user token add/);
  for (const name of ["node", "snippets", "template"]) assert.equal(checks[name]!.result, "failed");
  assert.equal(sim.requests.filter((r) => r.status === 401).length, 1);
  assert.equal(sim.requests.length, 1);
  assert.ok(!JSON.stringify(checks).includes("00000000-0000-0000-0000-000000000000"));
}));

test("no fingerprint configured: api check refuses with the pin hint, nothing sent", () => withSim({}, async (sim) => {
  const bare = providerFor(sim, {}, { fingerprint: "" }).provider;
  const checks = byName(await bare.preflight(phaseCtx()));
  assert.equal(checks.api!.result, "failed");
  assert.match(checks.api!.detail, /PveNotPinned/);
  assert.match(checks.api!.hint ?? "", /fingerprint/);
  assert.equal(sim.requests.length, 0);
}));

/** pve-9 at level 0's image directory: `size` random bytes, and the entry hsd's config would name it by. */
async function level0Image(sim: PveSim, size: number): Promise<{ name: string; path: string; sha256: string }> {
  const bytes = randomBytes(size);
  const path = join(sim.paths.vz, "template", "iso", "pve-9.img");
  await writeFile(path, bytes);
  return { name: "pve-9", path, sha256: createHash("sha256").update(bytes).digest("hex") };
}

test("a preflight that starts while another is half-way through making level 0's template shares that outcome, not 'exists but is not a template'", () =>
  withSim({ presetTemplate: false, timeScale: 1 }, async (sim) => {
    const image = await level0Image(sim, 256 * 1024);
    const { provider } = providerFor(sim, { templateImage: async () => image });
    const first = provider.preflight(phaseCtx());
    // The VM exists and is not a template yet: the second child's preflight starts now.
    // PVE's own task time (1 s, timeScale 1) keeps it half made long enough that
    // the second preflight reaches its template check first even on a loaded host.
    const deadline = Date.now() + 30_000;
    while (!(sim.vms.get(sim.templateVmid) && sim.vms.get(sim.templateVmid)!.config.template !== "1")) {
      assert.ok(Date.now() < deadline, "the template VM never appeared half made");
      await new Promise((r) => setImmediate(r));
    }
    const second = byName(await provider.preflight(phaseCtx()));
    assert.equal(second.template!.result, "repaired", second.template!.detail);
    assert.equal(byName(await first).template!.result, "repaired");
    assert.equal(sim.vms.get(sim.templateVmid)!.config.template, "1");
  }));

test("level 0 with its image and a free pve.template: preflight makes the template from the image (its own checks first), then finds it", () =>
  withSim({ presetTemplate: false }, async (sim) => {
    const image = await level0Image(sim, 256 * 1024);
    const { provider, commands } = providerFor(sim, { templateImage: async () => image });
    // Two children's preflights at once: one template is made, both see it.
    const [first, second] = (await Promise.all([provider.preflight(phaseCtx()), provider.preflight(phaseCtx())])).map(byName);
    // One storage status per preflight answers disk-space and the template's storage-room both; no pvesm (a perl start on PVE).
    assert.equal(sim.requests.filter((r) => r.template === "/nodes/{node}/storage/{storage}/status").length, 2);
    assert.equal(commands.calls.filter((c) => c.startsWith("pvesm")).length, 0);
    assert.deepEqual(second!.template!.result, "repaired");
    assert.deepEqual(["template-slot", "storage-room", "template"].map((n) => first[n]?.result), ["ok", "ok", "repaired"]);
    const t = sim.vms.get(sim.templateVmid)!;
    assert.equal(t.config.template, "1");
    assert.match(t.config.description ?? "", new RegExp(`hsd-image=pve-9@${image.sha256}`));
    assert.deepEqual(sim.imports.map((i) => i.file), [join(sim.paths.vz, "import", "pve-9.raw")]);
    // The next preflights (two at once, as for two children) find it and make nothing.
    const [a, b] = await Promise.all([provider.preflight(phaseCtx()), provider.preflight(phaseCtx())]);
    assert.deepEqual([byName(a).template!.result, byName(b).template!.result], ["ok", "ok"]);
    assert.equal(byName(await provider.preflight(phaseCtx())).template!.result, "ok");
    assert.equal(sim.imports.length, 1);
  }));

test("level 0 making its template asks PVE's version and the free vmid once: the template's own checks take the preflight's answers", () =>
  withSim({ presetTemplate: false }, async (sim) => {
    const image = await level0Image(sim, 64 * 1024);
    const { provider } = providerFor(sim, { templateImage: async () => image });
    const checks = byName(await provider.preflight(phaseCtx()));
    assert.deepEqual(["api", "template-slot", "storage-room", "template"].map((n) => checks[n]?.result), ["ok", "ok", "ok", "repaired"]);
    const create = sim.requests.find((q) => q.method === "POST" && q.template === "/nodes/{node}/qemu")!;
    const before = (path: string) => sim.requests.filter((q) => q.method === "GET" && q.path === path && q.at <= create.at).length;
    assert.equal(before("/version"), 1);
    assert.equal(before(`/nodes/${sim.node}/qemu/${sim.templateVmid}/config`), 1);
    assert.equal(sim.vms.get(sim.templateVmid)!.config.template, "1");
  }));

test("no template and no image to make one from: the template check fails with its hint, nothing is created", () =>
  withSim({ presetTemplate: false }, async (sim) => {
    const { provider } = providerFor(sim);
    const t = byName(await provider.preflight(phaseCtx())).template!;
    assert.equal(t.result, "failed");
    assert.match(t.hint ?? "", /images:/);
    assert.equal(sim.vms.size, 0);
  }));

test("an operator's template at pve.template is used as it is, even when level 0 holds an image", () =>
  withSim({}, async (sim) => {
    const before = { ...sim.vms.get(sim.templateVmid)!.config };
    const { provider } = providerFor(sim, { templateImage: async () => assert.fail("no image is needed when the template exists") });
    assert.equal(byName(await provider.preflight(phaseCtx())).template!.result, "ok");
    assert.deepEqual(sim.vms.get(sim.templateVmid)!.config, before);
  }));
