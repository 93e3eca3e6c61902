// The simulator held to PVE's own schema (src/providers/pve/pve-schema.ts):
// every route it serves is a schema endpoint, every format the table names has
// a checker, and bad requests over real HTTPS get PVE's 400 with its messages.
// Also the preflight's GET /version check of the supported release range.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startSim, clientFor, withSim, providerFor, phaseCtx } from "./helpers.js";
import { PveSim } from "../pve-sim/pve-sim.js";
import { buildRoutes } from "../pve-sim/pve-sim-api.js";
import { endpointSpec, expandParams, MSG, returnsViolations, validateRequest } from "../pve-sim/pve-schema-check.js";
import { FORMATS, HASH_FORMATS, type KeySpec } from "../pve-sim/pve-schema-formats.js";
import { PVE_SCHEMA, PVE_SCHEMA_BASELINE } from "../../src/providers/pve/pve-schema.js";
import { HsError } from "../../src/domain/errors.js";
import { pveVersionSupport } from "../../src/providers/pve/pve-version.js";
import { vmName } from "../../src/providers/pve/pve-provider.js";

let sim: PveSim;
before(async () => { sim = await startSim(); });
after(async () => { await sim.close(); });

/** Every key spec of the table, property-string keys included. */
function* specs(): Generator<[string, KeySpec]> {
  const walk = function* (where: string, s: KeySpec): Generator<[string, KeySpec]> {
    yield [where, s];
    if (s.format && typeof s.format === "object") for (const [k, sub] of Object.entries(s.format)) yield* walk(`${where}.${k}`, sub);
  };
  for (const [ep, e] of Object.entries(PVE_SCHEMA)) for (const [p, s] of Object.entries(e.params)) yield* walk(`${ep} ${p}`, s as KeySpec);
  for (const [name, h] of Object.entries(HASH_FORMATS)) for (const [k, s] of Object.entries(h.keys)) yield* walk(`${name}.${k}`, s);
}

test("every route the simulator serves is an endpoint of PVE's schema table", () => {
  const routes = buildRoutes(new PveSim());
  assert.ok(routes.length >= 21);
  const missing = routes.filter((r) => !endpointSpec(r.key)).map((r) => r.key);
  assert.deepEqual(missing, []);
  // A route outside the table cannot be built at all.
  assert.equal(endpointSpec("GET /nodes/{node}/network"), undefined);
});

test("every named format in the table has a checker or is knowingly unchecked; every pattern compiles", () => {
  const unknown: string[] = [];
  for (const [where, s] of specs()) {
    if (typeof s.format === "string" && s.format !== "string") {
      const name = s.format.replace(/-(list|opt)$/, "");
      if (!(name in FORMATS) && !(name in HASH_FORMATS)) unknown.push(`${where}: ${s.format}`);
    }
    if (s.pattern !== undefined) assert.doesNotThrow(() => new RegExp(`^${s.pattern}$`), where);
  }
  assert.deepEqual(unknown, []);
  // Every "x[n]" has a count (net0..net31 and so on).
  for (const e of Object.values(PVE_SCHEMA)) assert.doesNotThrow(() => expandParams(e as never));
});

/** What the simulator answers for one raw request: [status, errors]. */
async function answer(method: "GET" | "POST" | "PUT" | "DELETE", path: string, params: Record<string, string | number>): Promise<[number, Record<string, string>]> {
  const c = clientFor(sim);
  try {
    await c.call(method, path, params, {});
    return [200, {}];
  } catch (e) {
    assert.ok(e instanceof HsError, String(e));
    return [Number(e.details.status), (e.details.errors ?? {}) as Record<string, string>];
  }
}

const CFG = "/nodes/pve1/qemu/9000/config";
const cases: { name: string; method: "GET" | "POST" | "PUT" | "DELETE"; path: string; params: Record<string, string | number>; errors: Record<string, string> }[] = [
  { name: "misspelled parameter", method: "POST", path: CFG, params: { ciupgrde: 0 }, errors: { ciupgrde: MSG.unknown } },
  { name: "integer type", method: "POST", path: CFG, params: { cores: "abc" }, errors: { cores: "type check ('integer') failed - got 'abc'" } },
  { name: "boolean type", method: "POST", path: CFG, params: { ciupgrade: "yes" }, errors: { ciupgrade: "type check ('boolean') failed - got 'yes'" } },
  { name: "required parameter", method: "POST", path: "/nodes/pve1/qemu/9000/clone", params: { name: "x" }, errors: { newid: MSG.missing } },
  { name: "vmid range", method: "POST", path: "/nodes/pve1/qemu/9000/clone", params: { newid: 99 }, errors: { newid: "invalid format - value does not look like a valid VM ID\n" } },
  { name: "vmid in the path", method: "GET", path: "/nodes/pve1/qemu/abc/config", params: {}, errors: { vmid: "type check ('integer') failed - got 'abc'" } },
  { name: "node name in the path", method: "GET", path: "/nodes/pve_1/qemu/9000/config", params: {}, errors: { node: "invalid format - value does not look like a valid node name\n" } },
  { name: "clone name is a DNS name", method: "POST", path: "/nodes/pve1/qemu/9000/clone", params: { newid: 150, name: "hsd_l1" }, errors: { name: "invalid format - value does not look like a valid DNS name\n" } },
  { name: "net0 unknown key", method: "POST", path: CFG, params: { net0: "virtio,bridg=vmbr0" }, errors: { net0: "invalid format - invalid key in comma-separated list property: bridg\n" } },
  {
    name: "net0 model enum", method: "POST", path: CFG, params: { net0: "virtioo,bridge=vmbr0" },
    errors: { net0: "invalid format - format error\nnet0.model: value 'virtioo' does not have a value in the enumeration 'e1000, e1000-82540em, e1000-82544gc, e1000-82545em, e1000e, i82551, i82557b, i82559er, ne2k_isa, ne2k_pci, pcnet, rtl8139, virtio, vmxnet3'\n" },
  },
  {
    name: "scsi0 import-from source", method: "POST", path: CFG, params: { scsi0: "local-lvm:0,import-from=debian.qcow2" },
    errors: { scsi0: "invalid format - format error\nscsi0.import-from: invalid format - unable to parse volume ID 'debian.qcow2'\n\n" },
  },
  { name: "sshkeys must be urlencoded", method: "POST", path: CFG, params: { sshkeys: "ssh-ed25519 AAAA+b/Q= x" }, errors: { sshkeys: "invalid format - invalid urlencoded string: ssh-ed25519 AAAA+b/Q= x\n" } },
  { name: "cicustom keys", method: "POST", path: CFG, params: { cicustom: "usr=local:snippets/a.yaml" }, errors: { cicustom: "invalid format - invalid key in comma-separated list property: usr\n" } },
  { name: "ipconfig0 gw needs ip", method: "POST", path: CFG, params: { ipconfig0: "gw=10.0.0.1" }, errors: { ipconfig0: "invalid format - format error\nipconfig0.ip: missing property required by 'ipconfig0.gw'\n" } },
  { name: "cpu type", method: "POST", path: CFG, params: { cpu: "hots" }, errors: { cpu: "invalid format - Built-in cputype 'hots' is not defined (missing 'custom-' prefix?)\n" } },
  { name: "memory property string", method: "POST", path: CFG, params: { memory: "2G" }, errors: { memory: "invalid format - format error\nmemory.current: type check ('integer') failed - got '2G'\n" } },
  { name: "resize disk enum", method: "PUT", path: "/nodes/pve1/qemu/9000/resize", params: { disk: "scsi31", size: "+1G" }, errors: { disk: `value 'scsi31' does not have a value in the enumeration '${(PVE_SCHEMA["PUT /nodes/{node}/qemu/{vmid}/resize"].params.disk.enum).join(", ")}'` } },
  { name: "token id pattern", method: "POST", path: "/access/users/root@pam/token/9hsd", params: {}, errors: { tokenid: MSG.pattern } },
  { name: "storage content list", method: "PUT", path: "/storage/local", params: { content: "iso,snipets" }, errors: { content: "invalid format - invalid content type 'snipets'\n" } },
  { name: "two errors at once", method: "POST", path: CFG, params: { cores: "x", foo: 1 }, errors: { cores: "type check ('integer') failed - got 'x'", foo: MSG.unknown } },
];

for (const c of cases) {
  test(`400 like PVE: ${c.name}`, async () => {
    const before = sim.requests.length;
    const [status, errors] = await answer(c.method, c.path, c.params);
    assert.equal(status, 400);
    assert.deepEqual(errors, c.errors);
    assert.deepEqual(sim.requests.slice(before).map((r) => r.schemaErrors), [c.errors]);
  });
}

test("valid property strings pass: net0, scsi0 with import-from, cicustom, ipconfig0, sshkeys, agent, cpu", () => {
  const ok = validateRequest("POST /nodes/{node}/qemu/{vmid}/config", {
    node: "pve1", vmid: "100", net0: "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1", scsi0: "local-lvm:0,import-from=local:import/debian-12.qcow2",
    cicustom: "user=local:snippets/hsd-100.yaml,network=local:snippets/n.yaml", ipconfig0: "ip=10.0.0.5/24,gw=10.0.0.1",
    sshkeys: encodeURIComponent("ssh-ed25519 AAAA+b/Q= x\nssh-rsa BBB= y"), agent: "enabled=1,fstrim_cloned_disks=1", cpu: "host",
    memory: "2048", ciupgrade: "0", ide2: "local-lvm:cloudinit", scsihw: "virtio-scsi-pci", boot: "order=scsi0", serial0: "socket", vga: "serial0",
  }, PVE_SCHEMA_BASELINE);
  assert.equal(ok, undefined);
});

test("the 400 envelope and reason are PVE's", async () => {
  const res = await clientFor(sim).call("POST", CFG, { ciupgrde: 0 }, {}).catch((e: HsError) => e);
  assert.ok(res instanceof HsError);
  assert.equal(res.details.pveMessage, "Parameter verification failed.");
  assert.equal(res.code, "PveApi");
});

test("parameters newer than the node's release are unknown there: overrule-shutdown (8.2), ciupgrade (8.0)", async () => {
  for (const [release, status] of [["8.1.4", 400], ["8.3.2", 200]] as const) {
    await withSim({ release }, async (s) => {
      const c = clientFor(s);
      const upid = await c.api("POST /nodes/{node}/qemu/{vmid}/clone", { node: "pve1", vmid: s.templateVmid, newid: 150 });
      await c.waitTask(upid, { pollInitialMs: 5, pollMaxMs: 20 });
      const r = await c.call("POST", "/nodes/pve1/qemu/150/status/stop", { "overrule-shutdown": 1 }, {}).then(() => 200, (e: HsError) => Number(e.details.status));
      assert.equal(r, status, release);
    });
  }
  assert.deepEqual(validateRequest("POST /nodes/{node}/qemu/{vmid}/config", { node: "pve1", vmid: "100", ciupgrade: "0" }, "8.0.4"), undefined);
});

test("preflight checks GET /version against the supported range (PVE 8.x, 9.x)", async () => {
  assert.equal(pveVersionSupport("8.3.2").supported, true);
  assert.equal(pveVersionSupport("9.1.3").supported, true);
  assert.equal(pveVersionSupport("7.4-3").supported, false);
  assert.equal(pveVersionSupport("10.0.1").supported, true);
  assert.match(pveVersionSupport("10.0.1").note ?? "", /newer/);
  for (const [release, result] of [["7.4-3", "failed"], ["9.1.3", "ok"]] as const) {
    await withSim({ release }, async (s) => {
      const checks = await providerFor(s).provider.preflight(phaseCtx());
      const api = checks.find((c) => c.name === "api")!;
      assert.equal(api.result, result, `${release}: ${api.detail}`);
      if (result === "failed") assert.match(api.hint ?? "", /upgrade/);
    });
  }
});

test("the simulator's answers carry what the schema's returns promise", async () => {
  const c = clientFor(sim);
  const upid = await c.api("POST /nodes/{node}/qemu/{vmid}/clone", { node: "pve1", vmid: sim.templateVmid, newid: 160, name: "r160" });
  await c.waitTask(upid, { pollInitialMs: 5, pollMaxMs: 20 });
  const calls: [string, string, Record<string, string | number>][] = [
    ["GET /version", "/version", {}],
    ["GET /nodes", "/nodes", {}],
    ["GET /cluster/nextid", "/cluster/nextid", {}],
    ["GET /nodes/{node}/qemu/{vmid}/config", "/nodes/pve1/qemu/160/config", {}],
    ["GET /nodes/{node}/qemu/{vmid}/status/current", "/nodes/pve1/qemu/160/status/current", {}],
    ["GET /nodes/{node}/tasks/{upid}/status", `/nodes/pve1/tasks/${encodeURIComponent(upid)}/status`, {}],
    ["GET /nodes/{node}/tasks/{upid}/log", `/nodes/pve1/tasks/${encodeURIComponent(upid)}/log`, { start: 0, limit: 50 }],
    ["GET /nodes/{node}/storage/{storage}/content", "/nodes/pve1/storage/local/content", { content: "snippets" }],
    ["POST /access/users/{userid}/token/{tokenid}", "/access/users/root@pam/token/probe", { privsep: 0 }],
  ];
  const violations: string[] = [];
  for (const [key, path, params] of calls) {
    const env = await c.call(key.startsWith("GET") ? "GET" : "POST", path, params, {});
    violations.push(...returnsViolations(key, env.data).map((v) => `${key}: ${v}`));
  }
  assert.deepEqual(violations, []);
  // And the checker itself catches a departure.
  assert.deepEqual(returnsViolations("GET /nodes/{node}/qemu/{vmid}/status/current", { status: "paused", vmid: 100, ha: {} }), ["status: 'paused' not in stopped|running"]);
});

test("the clone name hsd derives from a level name is always a DNS name, as the schema requires", () => {
  for (const level of ["l1", "l1-", "edge-9", "a", "x".repeat(32), "a.b", "a..b-", "L_2"]) {
    assert.doesNotThrow(() => FORMATS["dns-name"]!(vmName(level)), `${level} -> ${vmName(level)}`);
  }
  assert.equal(vmName("l1"), "hsd-l1");
});
