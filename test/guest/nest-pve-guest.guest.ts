// End to end on the pve provider with a real guest (issue 18): `hsctl nest --depth 1
// --provider pve` against the PVE simulator in real-guest mode. Level 1 is a Debian 12
// VM under QEMU (TCG) on a test bridge with DHCP: cloud-init applies the snippet hsd
// wrote, the boot phase reads the real guest agent, install puts the bundle (with
// node) and the unit into the real Debian over its own sshd, systemd starts hsd, and
// level 1 configures itself as a PVE node (its simulator "l1" behind 127.0.0.1:8006
// in the guest, pveum & co. from the simulator's node disk, sim-qemu-node.ts). Then
// status, and destroy leaving no VM, QEMU, tap or hsd behind.
// Level 0 is `hsd run --root DIR` in a mount + UTS namespace standing in for PVE node
// "pve1" (hostname, /etc/hosts and pve-ssl.pem in an /etc overlay, nested=Y, pveum &
// co. as sim-shim.mjs on PATH), as in test/pve/nest-pve-e2e.test.ts.
// Run by `npm run test:guests`; timings are printed, never asserted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtemp, mkdir, writeFile, readFile, rm, copyFile, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { guestImage } from "./qemu-guest.js";
import { startGuestLan, type GuestLan } from "./guest-lan.js";
import { PveSim } from "../pve-sim/pve-sim.js";
import { qemuConsole } from "../pve-sim/sim-qemu.js";
import { hsctl, jsonLines, hsdProcessesUnder, HSD } from "../helpers/hsctl.js";
import { readyFromPipe } from "../../src/util/ready-pipe.js";
import { GuestSsh } from "../../src/providers/pve/guest-ssh.js";
import { schemaViolations } from "../pve/helpers.js";

const ROOT = new URL("../../", import.meta.url).pathname;
const SHIM = fileURLToPath(new URL("../pve-sim/sim-shim.mjs", import.meta.url));
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const NEST_MS = 1_500_000;

const t0 = Date.now();
const timings: Record<string, number> = {};
let root = "";
let l0 = "";
let env: Record<string, string> = {};
let lan: GuestLan | undefined;
let sim0: PveSim;
let simL1: PveSim;
const sims: PveSim[] = [];
let level0: ChildProcess | undefined;

/** Level 0 on its "PVE node" (see the header). Resolves once it is ready (its readiness pipe). */
async function startLevel0(bundle: string): Promise<ChildProcess> {
  const etc = join(root, "node0", "etc");
  await mkdir(join(etc, "pve/local"), { recursive: true });
  await mkdir(join(root, "node0", "work"), { recursive: true });
  await copyFile(sim0.paths.certFile, join(etc, "pve/local/pve-ssl.pem"));
  const hosts = await readFile("/etc/hosts", "utf8");
  await writeFile(join(etc, "hosts"), `${hosts.replace(/\n?$/, "\n")}${lan!.gateway} ${sim0.node}.${sim0.domain} ${sim0.node}\n`);
  const bin = join(root, "node0", "bin");
  await mkdir(bin, { recursive: true });
  for (const cmd of ["pveum", "pvesm", "pvecm", "qm"]) {
    await writeFile(join(bin, cmd), `#!/bin/sh\nexec ${q(process.execPath)} ${q(SHIM)} ${q(sim0.controlUrl)} ${cmd} "$@"\n`, { mode: 0o755 });
  }
  await mkdir(l0, { recursive: true, mode: 0o700 });
  await writeFile(join(l0, "hsd.yaml"), stringify({
    level: { name: "l0" },
    ssh: { host: "0.0.0.0", port: 0, advertise_host: lan!.gateway },
    nest: { provider: "pve" },
    // A TCG guest on a shared 2-core host: generous phase budgets (bounds, not expectations).
    budgets: { boot: "15m", install: "20m", configure: "20m" },
    pve: {
      url: sim0.url, node: sim0.node, token_id: sim0.tokenId, fingerprint: sim0.fingerprint, storage: "local-lvm",
      snippet_storage: "local", template: sim0.templateVmid, bridge: lan!.bridge, cores: 2, memory: 1536, bundle,
    },
  }), { mode: 0o600 });
  await writeFile(join(l0, "secrets.yaml"), stringify({ pve: { token_secret: sim0.tokenSecret } }), { mode: 0o600 });
  const script = [
    "set -e",
    `echo ${q(sim0.node)} > /proc/sys/kernel/hostname`,
    `mount -t overlay overlay -o lowerdir=/etc,upperdir=${q(etc)},workdir=${q(join(root, "node0", "work"))} /etc`,
    "mount -t tmpfs tmpfs /sys/module", "mkdir -p /sys/module/kvm_intel/parameters", "echo Y > /sys/module/kvm_intel/parameters/nested",
    `exec ${q(process.execPath)} ${q(HSD)} run --root ${q(l0)}`,
  ].join("\n");
  const log = await open(join(l0, "hsd.log"), "a", 0o600);
  const proc = spawn("unshare", ["-m", "-u", "--propagation", "private", "sh", "-c", script], {
    stdio: ["ignore", log.fd, log.fd, "pipe"],
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}`, HSD_READY_FD: "3", HSD_LOG_PRETTY: "" },
  });
  await log.close();
  await readyFromPipe(proc, AbortSignal.timeout(60_000), () => readFile(join(l0, "hsd.log"), "utf8").catch(() => ""));
  return proc;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), "hsd-pve-guest-e2e-"));
  l0 = join(root, "l0");
  env = { HSD_ROOT: l0 };
  const image = await guestImage();
  timings.imageS = image.seconds;
  const bundle = join(root, "hsd-bundle.tar.gz");
  // The real Debian has no node: the bundle carries this one.
  execFileSync(process.execPath, [join(ROOT, "scripts/bundle.mjs"), "--with-node", "--out", bundle], { stdio: "ignore", timeout: 180_000 });
  lan = await startGuestLan();
  simL1 = new PveSim({ node: "l1", host: lan.gateway, presetToken: false, bridges: [lan.bridge], vmNetwork: lan.net() });
  sim0 = new PveSim({
    node: "pve1", host: lan.gateway, bridges: [lan.bridge], vmNetwork: lan.net(), qemuGuests: { image },
    nodeFor: (n) => (n === "hsd-l1" ? simL1 : undefined),
  });
  for (const s of [simL1, sim0]) { sims.push(s); await s.start(); }
  level0 = await startLevel0(bundle);
});

after(async () => {
  if (level0?.exitCode === null) await hsctl(["destroy", "--json"], env, 300_000).catch(() => undefined);
  for (const pid of root ? await hsdProcessesUnder(root) : []) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  if (level0 && level0.exitCode === null && level0.signalCode === null) level0.kill("SIGKILL");
  for (const s of sims.reverse()) await s.close().catch(() => undefined);
  await lan?.close();
  if (root) await rm(root, { recursive: true, force: true });
  timings.wholeFileS = (Date.now() - t0) / 1000;
  console.log(`# pve real-guest e2e timings ${JSON.stringify(timings)}`);
});

async function failureContext(): Promise<string> {
  const vm = [...sim0.vms.values()].find((v) => v.config.name === "hsd-l1");
  const q0 = vm ? sim0.qemuVm(vm.vmid) : undefined;
  let journal = "(no guest session)";
  if (vm && q0) {
    // Level 1's own log, from its journal, over the guest's sshd with level 0's key.
    const ssh = await GuestSsh.connect({ host: await sim0.agentAddress(vm.vmid), privateKey: await readFile(join(l0, "keys/id_ed25519")), connectTimeoutMs: 20_000 }).catch(() => undefined);
    const r = await ssh?.exec("journalctl -u hsd -u hsd-pvenode --no-pager -n 80 -o cat", { timeoutMs: 60_000 }).catch((e: Error) => ({ stdout: e.message, stderr: "" }));
    ssh?.close();
    journal = r ? `${r.stdout}${r.stderr}` : journal;
  }
  return [sims.flatMap((s) => s.guestErrors).join("\n"), "--- level 0 log ---", (await readFile(join(l0, "hsd.log"), "utf8").catch(() => "")).slice(-3000),
    "--- level 1 journal ---", journal.slice(-6000), "--- l1 console ---", q0 ? (await qemuConsole(q0)).slice(-2000) : "(no QEMU)"].join("\n");
}

type Status = { name: string; state: string; address: string; children: Status[] };

test("nest --depth 1 --provider pve: level 1 in a real Debian guest, installed, started by systemd, configured as a PVE node", { timeout: NEST_MS + 120_000 }, async () => {
  const t = Date.now();
  const r = await hsctl(["nest", "--depth", "1", "--provider", "pve", "--json"], env, NEST_MS);
  timings.nestDepth1S = (Date.now() - t) / 1000;
  const events = jsonLines(r.stdout);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-4000)}\n${await failureContext()}`);
  for (const phase of ["provision", "boot", "install", "configure"]) {
    const done = events.find((e) => e.level === "l0/l1" && e.phase === phase && e.kind === "finished");
    assert.ok(done, `${phase} finished`);
  }
  // The install phase met the real cloud-init (and said what state it found).
  assert.ok(events.some((e) => e.level === "l0/l1" && e.phase === "install" && /^cloud-init is /.test(String(e.message ?? ""))));
  assert.ok(events.some((e) => e.level === "l0/l1" && e.phase === "configure" && /token: repaired - created root@pam!hsd/.test(String(e.message ?? ""))));
  assert.ok(simL1.tokens.has("root@pam!hsd"), "level 1 created its own API token through the guest's pveum");

  const vm = [...sim0.vms.values()].find((v) => v.config.name === "hsd-l1")!;
  const address = await sim0.agentAddress(vm.vmid);
  // Level 0's key (cloud-init put it in root's authorized_keys) opens the guest's own sshd.
  const ssh = await GuestSsh.connect({ host: address, privateKey: await readFile(join(l0, "keys/id_ed25519")), connectTimeoutMs: 20_000 });
  try {
    const run = async (cmd: string) => {
      const x = await ssh.exec(cmd, { timeoutMs: 60_000 });
      assert.equal(x.code, 0, `${cmd}: ${x.stderr}`);
      return x.stdout.trim();
    };
    assert.equal(await run("systemctl is-active hsd"), "active");
    assert.equal(await run("hostname"), "l1");
    assert.match(await run("cat /etc/homestak/hsd.yaml"), /url: https:\/\/127\.0\.0\.1:8006/);
    assert.match(await run("stat -c %a /etc/homestak/hsd.yaml"), /^600$/);
    assert.match(await run("cloud-init status"), /status: done/);
  } finally { ssh.close(); }

  const s = await hsctl(["status", "--json"], env, 120_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout) as Status;
  assert.deepEqual(st.children.map((c) => [c.name, c.state, c.address]), [["l1", "ready", `${address}:2222`]]);
});

test("destroy: the VM's QEMU, tap and every hsd process are gone", { timeout: 600_000 }, async () => {
  const vm = [...sim0.vms.values()].find((v) => v.config.name === "hsd-l1")!;
  const qemu = sim0.qemuVm(vm.vmid);
  assert.ok(qemu, "level 1's VM is a running QEMU guest");
  const d = await hsctl(["destroy", "--json"], env, 300_000);
  assert.equal(d.code, 0, `${d.stderr}\n${d.stdout.slice(-3000)}`);
  await Promise.all(sims.map((s) => s.settled()));
  assert.deepEqual([...sim0.vms.keys()], [sim0.templateVmid]);
  assert.ok(qemu.proc.exitCode !== null || qemu.proc.signalCode !== null, "QEMU exited");
  assert.equal(execFileSync("ip", ["-br", "link"], { encoding: "utf8" }).split("\n").filter((l) => l.startsWith(qemu.tap)).length, 0);
  assert.deepEqual(await hsdProcessesUnder(root), []);
});

test("every call hsd sent to the PVE nodes is valid in PVE's schema", () => {
  assert.deepEqual(schemaViolations(sims.flatMap((s) => s.requests)), []);
});
