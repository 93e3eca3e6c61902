// End to end on the pve provider: `hsctl nest --depth 2 --provider pve --json`
// against the PVE simulator with real processes only, then status, then
// `hsctl destroy` leaving no VM, namespace or hsd process behind. Needs root.
// The tree (level 0 on node pve1, levels 1 and 2 each a VM that is a PVE node
// with its own simulator, each level's templates preset as an operator would
// have made them) is pve-tree.ts's: see its header for why it keeps the
// provider honest.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import type { PveSim } from "../pve-sim/pve-sim.js";
import { hsctl, jsonLines } from "../helpers/hsctl.js";
import { schemaViolations } from "./helpers.js";
import { alive, destroyTree, startPveTree, vmHsdPid, type PveTree } from "./pve-tree.js";
import { keepLogsOnFailure } from "./tree-logs.js";

let tree: PveTree;
let env: Record<string, string> = {};
let sims: readonly PveSim[] = [];
let sim0: PveSim;
let simL1: PveSim;
let simL2: PveSim;

before(async () => {
  tree = await startPveTree({ depth: 2, prefix: "hsd-pve-e2e-" });
  ({ env, sims } = tree);
  [sim0, simL1, simL2] = sims as [PveSim, PveSim, PveSim];
});

keepLogsOnFailure(() => tree);
after(async () => { await tree?.close(); });

type Status = { name: string; state: string; address: string; provider: string; children: Status[] };

test("nest --depth 2 --provider pve: two nested VMs with the bundled hsd, task logs streamed as progress", async () => {
  const r = await hsctl(["nest", "--depth", "2", "--provider", "pve", "--json"], env, 280_000);
  const events = jsonLines(r.stdout);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${sims.flatMap((s) => s.guestErrors).join("\n")}\n${r.stdout.slice(-4000)}`);
  const ready = events.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level);
  assert.deepEqual(ready.sort(), ["l0/l1", "l0/l1/l2"]);

  // The clone task's own log lines arrive as progress of each level's provision.
  for (const level of ["l0/l1", "l0/l1/l2"]) {
    const lines = events.filter((e) => e.level === level && e.phase === "provision" && e.kind === "progress").map((e) => String(e.message ?? ""));
    assert.ok(lines.some((m) => /^qmclone 9000: create linked clone of drive scsi0/.test(m)), `${level}: ${JSON.stringify(lines)}`);
    assert.ok(lines.some((m) => m === "qmclone 9000: TASK OK"), level);
  }
  // Each level's hsd installed and started itself from its boot CD during the VM's first boot (cloud-init's
  // runcmd): install found it running, copied no bundle and restarted nothing.
  for (const level of ["l0/l1", "l0/l1/l2"]) {
    const lines = events.filter((e) => e.level === level && (e.phase === "provision" || e.phase === "install")).map((e) => String(e.message ?? ""));
    assert.ok(lines.some((m) => /^boot CD hsd-\d+\.iso written/.test(m)), `${level}: ${JSON.stringify(lines)}`);
    assert.ok(lines.some((m) => m.startsWith("hsd 0.1.0 started from the boot CD is running on the child")), `${level}: ${JSON.stringify(lines)}`);
    assert.ok(!lines.some((m) => m.startsWith("copying the hsd bundle")), `${level}: ${JSON.stringify(lines)}`);
  }
  // Each PVE level set itself up in its configure phase (token via pveum, snippets, certificate).
  assert.ok(events.some((e) => e.level === "l0/l1" && e.phase === "configure" && /token: repaired - created root@pam!hsd/.test(e.message ?? "")));
  assert.ok(events.some((e) => e.level === "l0/l1/l2" && e.phase === "configure" && /token: repaired/.test(e.message ?? "")));

  // One VM per level, each on the node of the level above.
  const vm1 = [...sim0.vms.values()].find((v) => v.config.name === "hsd-l1");
  const vm2 = [...simL1.vms.values()].find((v) => v.config.name === "hsd-l2");
  assert.equal(vm1?.status, "running");
  assert.equal(vm2?.status, "running");
  assert.equal(vm1.config.cpu, "host");
  assert.ok(simL1.tokens.has("root@pam!hsd") && simL2.tokens.has("root@pam!hsd"), "levels 1 and 2 created their own API tokens");

  // Level 1 runs the installed bundle at system paths inside its VM, and holds the token secret it created.
  const up1 = join(sim0.guestRoot(vm1.vmid), "upper");
  const cfg1 = parse(await readFile(join(up1, "etc/homestak/hsd.yaml"), "utf8")) as Record<string, any>;
  assert.equal(cfg1.nest.provider, "pve");
  assert.equal(cfg1.pve.url, "https://127.0.0.1:8006");
  assert.equal(cfg1.pve.node, "l1");
  const sec1 = parse(await readFile(join(up1, "var/lib/hsd/secrets.yaml"), "utf8")) as Record<string, any>;
  assert.equal(sec1.pve.token_secret, simL1.tokens.get("root@pam!hsd"));
  // homestak's tools find each PVE level through its own site-config: exactly its own token under
  // api_tokens.<name> (0600) and nodes/<name>.yaml as homestak's generate_node_config writes it.
  const tokenOf = { l1: simL1.tokens.get("root@pam!hsd")!, l2: simL2.tokens.get("root@pam!hsd")! };
  for (const [sim, vm, name] of [[sim0, vm1, "l1"], [simL1, vm2, "l2"]] as const) {
    const up = join(sim.guestRoot(vm.vmid), "upper");
    const cfgDir = join(up, "var/lib/hsd/homestak/config");
    const cfg = parse(await readFile(join(up, "etc/homestak/hsd.yaml"), "utf8")) as Record<string, any>;
    assert.equal((await stat(join(cfgDir, "secrets.yaml"))).mode & 0o777, 0o600, name);
    const sec = parse(await readFile(join(cfgDir, "secrets.yaml"), "utf8")) as Record<string, any>;
    assert.deepEqual(sec.api_tokens, { [name]: `root@pam!hsd=${tokenOf[name]}` }, name);
    const node = parse(await readFile(join(cfgDir, "nodes", `${name}.yaml`), "utf8")) as Record<string, any>;
    assert.deepEqual(node, {
      node: name, host: name, api_endpoint: "https://localhost:8006", api_token: name, datastore: cfg.pve.storage, ip: await sim.agentAddress(vm.vmid),
    }, name);
    // No other level's token anywhere on this level's disk (level 0's included).
    const others = [sim0.tokenSecret, ...Object.entries(tokenOf).filter(([n]) => n !== name).map(([, t]) => t)];
    for (const t of others) {
      const hits = spawnSync("grep", ["-rlF", "--", t, up], { encoding: "utf8" });
      assert.equal(hits.stdout, "", `${name} holds another level's token in ${hits.stdout}`);
    }
  }
  for (const [sim, vm] of [[sim0, vm1], [simL1, vm2]] as const) {
    // cloud-init ran the user-data's runcmd: the CD's script started hsd, and systemd was asked once, by it.
    const root = sim.guestRoot(vm.vmid);
    assert.equal(await readFile(join(root, "cloud-init/status"), "utf8"), "status: done\n");
    assert.match(await readFile(join(root, "cloud-init/output.log"), "utf8"), /hsd boot install: exit 0 \(address [0-9.]+\)/);
    assert.deepEqual((await readFile(join(root, "systemctl.log"), "utf8")).split("\n").filter((l) => /^systemctl (start|restart)/.test(l)), ["systemctl start --no-block hsd"]);
    const pid = await vmHsdPid(tree, sim, vm.vmid);
    assert.ok(alive(pid), `hsd in VM ${vm.config.name}`);
    assert.match(await readFile(`/proc/${pid}/cmdline`, "utf8"), /\/opt\/hsd\/bin\/hsd\.js\0run/);
    // The VM's /root is its own, as a fresh Debian's: not this host's, whose .bashrc every SSH session would run.
    const stock = await readFile("/usr/share/base-files/dot.bashrc", "utf8").catch(() => undefined);
    assert.equal(await readFile(`/proc/${pid}/root/root/.bashrc`, "utf8").catch(() => undefined), stock, vm.config.name);
  }

  const s = await hsctl(["status", "--json"], env, 30_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout) as Status;
  const chain: Status[] = [];
  for (let n: Status | undefined = st; n; n = n.children[0]) chain.push(n);
  assert.deepEqual(chain.map((n) => n.name), ["l0", "l1", "l2"]);
  assert.deepEqual(chain.slice(1).map((n) => n.state), ["ready", "ready"]);
  // Each level is reached at its VM's own address (the guest agent's answer), port 2222.
  assert.equal(chain[1]!.address, `${await sim0.agentAddress(vm1.vmid)}:2222`);
  assert.equal(chain[2]!.address, `${await simL1.agentAddress(vm2.vmid)}:2222`);
});

test("destroy removes both VMs, their namespaces and every hsd process", async () => {
  const isoDir = join(sim0.paths.vz, "template/iso");
  assert.ok((await readdir(isoDir)).some((f) => /^hsd-\d+\.iso$/.test(f)), "level 1's boot CD on level 0's node");
  await destroyTree(tree);
  assert.deepEqual([...sim0.vms.keys()], [sim0.templateVmid]);
  assert.deepEqual((await readdir(isoDir)).filter((f) => f.startsWith("hsd-")), [], "no boot CD left on level 0's node");
  // Level 1's node was VM hsd-l1: its disk, and everything level 1 made on it, went with that VM.
  assert.deepEqual([...simL1.vms.keys()], []);
});

test("every (method, path, parameters) hsd sent to the three PVE nodes is valid in PVE's schema", (t) => {
  const calls = sims.flatMap((s) => s.requests);
  const endpoints = new Set(calls.map((r) => `${r.method} ${r.template}`));
  // The whole lifecycle went through the API: clone, config, start, agent, stop, delete, tasks, storage.
  for (const ep of ["POST /nodes/{node}/qemu/{vmid}/clone", "POST /nodes/{node}/qemu/{vmid}/config", "POST /nodes/{node}/qemu/{vmid}/status/start",
    "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", "DELETE /nodes/{node}/qemu/{vmid}", "GET /nodes/{node}/tasks/{upid}/status", "GET /storage/{storage}"]) {
    assert.ok(endpoints.has(ep), `${ep} was called (${[...endpoints].join(", ")})`);
  }
  assert.deepEqual(schemaViolations(calls), []);
  t.diagnostic(`${calls.length} calls to ${endpoints.size} endpoints checked against PVE's schema`);
});
