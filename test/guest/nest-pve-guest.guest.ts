// End to end on the pve provider with real guests (issue 18): `hsctl nest --depth 2
// --provider pve` against the PVE simulator in real-guest mode. Level 1 is a Debian 12
// VM under QEMU (TCG) on the tree's bridge with DHCP: cloud-init applies the snippet hsd
// wrote, the boot phase reads the real guest agent, install puts the bundle (with
// node) and the unit into the real Debian over its own sshd, systemd starts hsd, and
// level 1 configures itself as a PVE node (its simulator "l1" behind 127.0.0.1:8006
// in the guest, pveum & co. from the simulator's node disk, sim-qemu-node.ts). Level 1's
// hsd then builds level 2 the same way through that simulator: a second QEMU guest on
// the same bridge (as a VM bridged to level 1's LAN), its cloud-init snippet read from
// level 1's own /var/lib/vz through level 1's guest agent (sim-node-fs.ts), installed by
// level 1 over level 2's sshd, cloning from level 1. Level 1 itself installs from the boot CD
// level 0 wrote (the real cloud-init runs its runcmd); level 1's guest has no genisoimage,
// so level 2 takes the SSH install: both paths on real guests. Then status, and destroy leaving no
// VM, QEMU, tap or hsd behind. Level 0 and the simulators are test/pve/pve-tree.ts's
// (its qemuGuests option).
// Run by `npm run test:guests`; timings are printed, never asserted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { guestImage } from "./qemu-guest.js";
import { qemuConsole } from "../pve-sim/sim-qemu.js";
import { hsctl, jsonLines, hsdProcessesUnder } from "../helpers/hsctl.js";
import { GuestSsh } from "../../src/providers/pve/guest-ssh.js";
import { schemaViolations } from "../pve/helpers.js";
import { startPveTree, vmNamed, type PveTree } from "../pve/pve-tree.js";
import type { PveSim } from "../pve-sim/pve-sim.js";

const NEST_MS = 2_400_000;

const t0 = Date.now();
const timings: Record<string, number> = {};
let tree: PveTree | undefined;
let sim0: PveSim;
let simL1: PveSim;
let l0 = "";
let env: Record<string, string> = {};

before(async () => {
  const image = await guestImage();
  timings.imageS = image.seconds;
  tree = await startPveTree({
    depth: 2, prefix: "hsd-pve-guest-e2e-", qemuGuests: { image },
    // A TCG guest on a shared 2-core host: generous phase budgets (bounds, not expectations).
    extraConfig: { budgets: { boot: "15m", install: "20m", configure: "20m" } },
  });
  [sim0, simL1] = tree.sims as [PveSim, PveSim, PveSim];
  l0 = tree.l0;
  env = tree.env;
});

after(async () => {
  await tree?.close();
  timings.wholeFileS = (Date.now() - t0) / 1000;
  console.log(`# pve real-guest e2e timings ${JSON.stringify(timings)}`);
});

async function failureContext(): Promise<string> {
  const vm = vmNamed(sim0, "l1");
  const q0 = vm ? sim0.qemuVm(vm.vmid) : undefined;
  let journal = "(no guest session)";
  if (vm && q0) {
    // Level 1's own log, from its journal, over the guest's sshd with level 0's key.
    const ssh = await GuestSsh.connect({ host: await sim0.agentAddress(vm.vmid), privateKey: await readFile(join(l0, "keys/id_ed25519")), connectTimeoutMs: 20_000 }).catch(() => undefined);
    const r = await ssh?.exec("journalctl -u hsd -u hsd-pvenode --no-pager -n 80 -o cat", { timeoutMs: 60_000 }).catch((e: Error) => ({ stdout: e.message, stderr: "" }));
    ssh?.close();
    journal = r ? `${r.stdout}${r.stderr}` : journal;
  }
  return [tree!.sims.flatMap((s) => s.guestErrors).join("\n"), "--- dhcp ---", (await tree!.dhcpLog()).slice(-1000), "--- level 0 log ---", (await readFile(join(l0, "hsd.log"), "utf8").catch(() => "")).slice(-3000),
    "--- level 1 journal ---", journal.slice(-6000), "--- l1 console ---", q0 ? (await qemuConsole(q0)).slice(-2000) : "(no QEMU)"].join("\n");
}

type Status = { name: string; state: string; address: string; children: Status[] };

/** Boot to SSH of one level's guest: QEMU started (host clock) to the install phase's first word from the guest's sshd. */
function bootToSshS(events: Record<string, unknown>[], level: string, qemuStartedAt: number | undefined): number | undefined {
  const first = events.find((e) => e.level === level && e.phase === "install" && /^cloud-init is /.test(String(e.message ?? "")));
  // hsctl --json stamps events with ISO times (the emitting level's clock; a TCG guest's follows the host's RTC).
  return first && qemuStartedAt ? (Date.parse(String(first.time)) - qemuStartedAt) / 1000 : undefined;
}

test("nest --depth 2 --provider pve: levels 1 and 2 in real Debian guests, installed, started by systemd, configured as PVE nodes", { timeout: NEST_MS + 120_000 }, async () => {
  const t = Date.now();
  const r = await hsctl(["nest", "--depth", "2", "--provider", "pve", "--json"], env, NEST_MS);
  timings.nestDepth2S = (Date.now() - t) / 1000;
  const events = jsonLines(r.stdout);
  for (const level of ["l0/l1", "l0/l1/l2"]) {
    for (const phase of ["provision", "boot", "install"]) {
      const d = events.find((e) => e.level === level && e.phase === phase && e.kind === "finished");
      if (d?.durationMs !== undefined) timings[`${level.split("/").pop()}_${phase}S`] = Number(d.durationMs) / 1000;
    }
  }
  const vm1 = vmNamed(sim0, "l1");
  const vm2 = vmNamed(simL1, "l2");
  timings.l1BootToSshS = bootToSshS(events, "l0/l1", vm1 && sim0.qemuVm(vm1.vmid)?.startedAt) ?? -1;
  timings.l2BootToSshS = bootToSshS(events, "l0/l1/l2", vm2 && simL1.qemuVm(vm2.vmid)?.startedAt) ?? -1;
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-4000)}\n${await failureContext()}`);
  for (const level of ["l0/l1", "l0/l1/l2"]) {
    for (const phase of ["provision", "boot", "install", "configure"]) {
      const done = events.find((e) => e.level === level && e.phase === phase && e.kind === "finished");
      assert.ok(done, `${level} ${phase} finished`);
    }
    // The install phase met the real cloud-init (and said what state it found).
    assert.ok(events.some((e) => e.level === level && e.phase === "install" && /^cloud-init is /.test(String(e.message ?? ""))), `${level}: cloud-init state`);
  }
  // Level 1's hsd came from its boot CD: the real cloud-init ran the snippet's runcmd, which mounted the CD by its
  // label and started hsd under the real systemd; install found it and copied nothing. Level 1's guest has no
  // genisoimage (a real PVE node has, as qemu-server's dependency): level 2 gets no CD, and is installed over SSH.
  const said = (level: string) => events.filter((e) => e.level === level && (e.phase === "provision" || e.phase === "install")).map((e) => String(e.message ?? ""));
  assert.ok(said("l0/l1").some((m) => m.startsWith("hsd 0.1.0 started from the boot CD is running on the child")), said("l0/l1").join("\n"));
  assert.ok(!said("l0/l1").some((m) => m.startsWith("copying the hsd bundle")), said("l0/l1").join("\n"));
  assert.ok(said("l0/l1/l2").includes("no boot CD (genisoimage is not installed); hsd will be installed over SSH"), said("l0/l1/l2").join("\n"));
  assert.ok(said("l0/l1/l2").some((m) => m.startsWith("copying the hsd bundle")), said("l0/l1/l2").join("\n"));
  assert.ok(events.some((e) => e.level === "l0/l1" && e.phase === "configure" && /token: repaired - created root@pam!hsd/.test(String(e.message ?? ""))));
  assert.ok(simL1.tokens.has("root@pam!hsd"), "level 1 created its own API token through the guest's pveum");
  assert.ok(tree!.sims[2]!.tokens.has("root@pam!hsd"), "level 2 created its own API token through its guest's pveum");
  // Level 2 is a QEMU guest of level 1's node, started with the snippet level 1's hsd wrote into its own /var/lib/vz.
  assert.ok(vm2 && simL1.qemuVm(vm2.vmid), "level 2's VM is a running QEMU guest of level 1's node");
  assert.match(vm2.config.cicustom ?? "", /user=local:snippets\//);

  const address = await sim0.agentAddress(vm1!.vmid);
  const address2 = await simL1.agentAddress(vm2.vmid);
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
    // The CD's script said so in cloud-init's output log, and systemd started hsd once: the CD's start.
    assert.match(await run("cat /var/log/cloud-init-output.log"), /hsd boot install: exit 0 \(address [0-9.]+\)/);
    assert.equal(await run("journalctl -u hsd --no-pager -o cat | grep -c '^Started '"), "1");
    // Level 2 seen from level 1, as a bridged VM is seen from its node: level 1's own key opens level 2's sshd.
    const key = await run("ls /var/lib/hsd/keys/id_ed25519 2>/dev/null || find / -xdev -name id_ed25519 -path '*keys*' 2>/dev/null | head -1");
    const l2 = (cmd: string) => run(`ssh -i ${key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 -o BatchMode=yes root@${address2} ${JSON.stringify(cmd)}`);
    assert.equal(await l2("systemctl is-active hsd"), "active");
    assert.equal(await l2("hostname"), "l2");
    assert.match(await l2("cloud-init status"), /status: done/);
  } finally { ssh.close(); }

  const s = await hsctl(["status", "--json"], env, 120_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout) as Status;
  assert.deepEqual(st.children.map((c) => [c.name, c.state, c.address]), [["l1", "ready", `${address}:2222`]]);
  assert.deepEqual(st.children[0]!.children.map((c) => [c.name, c.state, c.address]), [["l2", "ready", `${address2}:2222`]]);
});

test("destroy: the VM's QEMU, tap and every hsd process are gone", { timeout: 600_000 }, async () => {
  const vm = vmNamed(sim0, "l1")!;
  const qemu = sim0.qemuVm(vm.vmid);
  assert.ok(qemu, "level 1's VM is a running QEMU guest");
  const vm2 = vmNamed(simL1, "l2")!;
  const qemu2 = simL1.qemuVm(vm2.vmid);
  assert.ok(qemu2, "level 2's VM is a running QEMU guest");
  const d = await hsctl(["destroy", "--json"], env, 300_000);
  assert.equal(d.code, 0, `${d.stderr}\n${d.stdout.slice(-3000)}`);
  await Promise.all(tree!.sims.map((s) => s.settled()));
  assert.deepEqual([...sim0.vms.keys()], [sim0.templateVmid]);
  for (const q of [qemu, qemu2]) {
    assert.ok(q.proc.exitCode !== null || q.proc.signalCode !== null, `QEMU of VM ${q.vmid} exited`);
    assert.equal(execFileSync("ip", ["-br", "link"], { encoding: "utf8" }).split("\n").filter((l) => l.startsWith(`${q.tap} `)).length, 0);
  }
  assert.deepEqual(await hsdProcessesUnder(tree!.root), []);
});

test("every call hsd sent to the PVE nodes is valid in PVE's schema", () => {
  assert.deepEqual(schemaViolations(tree!.sims.flatMap((s) => s.requests)), []);
});
