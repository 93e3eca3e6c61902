// The pve provider's provision, boot and install phases against the PVE simulator
// in real-guest mode (issue 18): each VM is a Debian 12 guest under QEMU (TCG) on a
// test bridge, cloud-init applies the snippet hsd wrote from a NoCloud seed the
// simulator builds from the VM config, boot learns the address from the real
// qemu-guest-agent, install talks to the guest's own OpenSSH on port 22 and puts
// the bundle (with node) and the unit into the real Debian. Then seed lessons 5
// and 7 against the real thing: a real apt process holding the lock, cloud-init
// still running and ended in `error`, an sshd that accepts TCP but never speaks.
// Run by `npm run test:guests` (root, qemu-system-x86, debootstrap, dnsmasq,
// genisoimage); timings are printed as test diagnostics, never asserted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { guestImage, type GuestImage } from "./qemu-guest.js";
import { startGuestLan, type GuestLan } from "./guest-lan.js";
import { PveSim } from "../pve-sim/pve-sim.js";
import { qemuConsole } from "../pve-sim/sim-qemu.js";
import { providerFor, phaseCtx, rejection, clientFor, type Emitted } from "../pve/helpers.js";
import type { PveProvider, PveProviderOptions } from "../../src/providers/pve/pve-provider.js";
import type { ChildHandle, ChildInstallSpec } from "../../src/providers/provider.js";
import { GuestSsh } from "../../src/providers/pve/guest-ssh.js";

const ROOT = new URL("../../", import.meta.url).pathname;
/** Bounds for a TCG guest on a loaded 2-core host: generous, never asserted. */
const BOOT_MS = 600_000;
const PHASE_MS = 900_000;

const t0 = Date.now();
const timings: Record<string, number> = {};
let tmp = "";
let image: GuestImage;
let lan: GuestLan | undefined;
let sim: PveSim | undefined;
let keys: { priv: string; pub: string };
let bundlePath = "";

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "hsd-pve-guest-"));
  image = await guestImage();
  timings.imageS = image.seconds;
  timings.imageBuiltInS = image.builtInSeconds;
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "hsd@l0", "-f", join(tmp, "level")]);
  keys = { priv: join(tmp, "level"), pub: (await readFile(join(tmp, "level.pub"), "utf8")).trim() };
  bundlePath = join(tmp, "hsd-bundle.tar.gz");
  // The real Debian has no node: the bundle carries this one (as `nest` ships it by default).
  execFileSync(process.execPath, [join(ROOT, "scripts/bundle.mjs"), "--with-node", "--out", bundlePath], { stdio: "ignore", timeout: 180_000 });
  lan = await startGuestLan();
  sim = await new PveSim({ node: "pve1", host: lan.gateway, bridges: [lan.bridge], vmNetwork: lan.net(), qemuGuests: { image } }).start();
});

after(async () => {
  await sim?.close();
  await lan?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
  timings.wholeFileS = (Date.now() - t0) / 1000;
  console.log(`# pve real-guest timings ${JSON.stringify(timings)}`);
});

function spec(): ChildInstallSpec {
  return {
    name: "l1", depth: 1, parentHost: lan!.gateway, parentPort: 2222, parentHostKeyFingerprint: "SHA256:cGFyZW50aG9zdGtleQ",
    parentPublicKey: keys.pub, repoNames: [], extraConfig: {},
  };
}

function provider(over: Partial<PveProviderOptions> = {}): PveProvider {
  return providerFor(sim!, {
    sshPublicKeys: [keys.pub], sshPrivateKeyPath: keys.priv, bundlePath, childSshPort: 2222,
    agentPoll: { intervalMs: 1000, minPauseMs: 100 }, bootTimeoutMs: BOOT_MS, sshWaitMs: BOOT_MS,
    readyTimeoutMs: 300_000, commandTimeoutMs: 180_000, cloudInitTimeoutMs: BOOT_MS, pollMs: 1000, ...over,
  }, { bridge: lan!.bridge }).provider;
}

const ctx = (events: Emitted[] = []) => ({ ...phaseCtx(events), signal: AbortSignal.timeout(PHASE_MS) });
const logs = (events: Emitted[]) => events.filter((e) => e.kind === "log").map((e) => String((e as { message?: unknown }).message));

/** A root session on the guest's own sshd (port 22) with the level's key. */
async function rootSsh(address: string): Promise<GuestSsh> {
  return GuestSsh.waitFor({ host: address, privateKey: await readFile(keys.priv), waitMs: BOOT_MS, signal: AbortSignal.timeout(BOOT_MS + 60_000), connectTimeoutMs: 20_000 });
}
async function sh(ssh: GuestSsh, script: string, timeoutMs = 120_000): Promise<string> {
  const r = await ssh.exec("sh -s", { timeoutMs, stdin: `${script}\n` });
  assert.equal(r.code, 0, `guest: ${script}\nexit ${r.code}\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  return r.stdout.trim();
}
async function failureContext(vmid: number): Promise<string> {
  const vm = sim?.qemuVm(vmid);
  return `${sim?.guestErrors.join("\n") ?? ""}\n--- console ---\n${vm ? (await qemuConsole(vm)).slice(-3000) : "(not running)"}\n--- dhcp ---\n${(await lan?.log() ?? "").slice(-1500)}`;
}

let vm1: (ChildHandle & { address: string }) | undefined;
let ssh1: GuestSsh | undefined;
after(() => ssh1?.close());

test("real guest: provision, boot (the agent's address), install hsd into Debian over the guest's own sshd", { timeout: 1_800_000 }, async () => {
  const p = provider();
  const events: Emitted[] = [];
  const c = ctx(events);
  const child = await p.provision("l1", 1, c);
  const vmid = Number(child.data.vmid);
  const tBoot = Date.now();
  try {
    vm1 = await p.boot(child, c);
  } catch (e) { throw new Error(`${(e as Error).message}\n${await failureContext(vmid)}`); }
  timings.bootToAgentAddressS = (Date.now() - tBoot) / 1000;
  // The agent's address is the guest's DHCP lease on the test bridge, not a made-up one.
  assert.match(vm1.address, new RegExp(`^${lan!.gateway.replace(/\.1$/, "").replace(/\./g, "\\.")}\\.\\d+$`));
  assert.match(await lan!.log(), new RegExp(`DHCPACK\\(${lan!.bridge}\\) ${vm1.address.replace(/\./g, "\\.")} `));
  const tInstall = Date.now();
  const r = await p.install(vm1, spec(), c);
  timings.installS = (Date.now() - tInstall) / 1000;
  timings.bootToReadyS = (Date.now() - tBoot) / 1000;
  assert.equal(r.endpoint.host, vm1.address);
  assert.equal(r.endpoint.port, 2222);
  assert.ok(logs(events).some((m) => /^cloud-init is /.test(m)), logs(events).join("\n"));

  ssh1 = await rootSsh(vm1.address);
  // cloud-init applied the snippet hsd wrote: the level's name as hostname, the level's key for root.
  assert.equal(await sh(ssh1, "hostname"), "l1");
  assert.match(await sh(ssh1, "cat /root/.ssh/authorized_keys"), new RegExp(keys.pub.split(" ")[1]!.replace(/[+/]/g, "\\$&")));
  assert.match(await sh(ssh1, "cloud-init status"), /status: done/);
  // hsd runs as the systemd service from the bundle's node, and its SSH endpoint answers from here (the parent).
  assert.equal(await sh(ssh1, "systemctl is-active hsd"), "active");
  const pid = Number(await sh(ssh1, "systemctl show hsd -p MainPID --value"));
  assert.match(await sh(ssh1, `tr '\\0' ' ' < /proc/${pid}/cmdline`), /^\/opt\/hsd\/bin\/node .*\/opt\/hsd\/bin\/hsd\.js run/);
  const banner = execFileSync("bash", ["-c", `exec 3<>/dev/tcp/${vm1.address}/2222 && head -c 8 <&3`], { encoding: "utf8", timeout: 30_000 });
  assert.equal(banner, "SSH-2.0-");
});

test("real guest: install waits while a real apt process holds the apt lock, and fails typed when it outlasts the budget (lesson 7)", { timeout: 1_200_000 }, async () => {
  assert.ok(vm1 && ssh1, "needs the first test's guest");
  // A real apt-get holding /var/lib/apt/lists/lock: its update pre-invoke hook runs under the lock,
  // until the test releases it (a file appears) or 10 minutes pass.
  const holdLock = (tag: string) => sh(ssh1!, `rm -f /tmp/release-${tag}
setsid apt-get -q -o 'APT::Update::Pre-Invoke::=timeout 600 sh -c "until [ -e /tmp/release-${tag} ]; do sleep 0.2; done"' update </dev/null >/tmp/apt-${tag}.log 2>&1 &
for i in $(seq 300); do fuser /var/lib/apt/lists/lock >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1`);
  const released = (tag: string) => sh(ssh1!, `touch /tmp/release-${tag}; for i in $(seq 300); do pgrep -x apt-get >/dev/null || exit 0; sleep 0.2; done; exit 1`);

  await holdLock("short");
  const short = await rejection(provider({ aptLockTimeoutMs: 5000 }).install(vm1, spec(), ctx()));
  assert.equal(short.code, "AptLocked");
  assert.match(String(short.details.holders), /apt-get/);
  await released("short");

  await holdLock("long");
  const events: Emitted[] = [];
  const c = ctx();
  // apt finishes on its own once install is seen waiting for it.
  let release: Promise<string> | undefined;
  const watching = { ...c, emit: (ev: Emitted) => {
    events.push(ev);
    if (!release && ev.kind === "log" && String((ev as { message?: unknown }).message).startsWith("waiting for apt/dpkg")) release = released("long");
  } };
  const t = Date.now();
  const r = await provider().install(vm1, spec(), watching);
  timings.installWaitingForAptS = (Date.now() - t) / 1000;
  await release;
  assert.equal(r.endpoint.port, 2222);
  const l = logs(events);
  const waited = l.findIndex((m) => /^waiting for apt\/dpkg to release its lock \(held by .*apt-get/.test(m));
  const freed = l.indexOf("apt/dpkg lock released");
  // The bundle streams into the staging dir beside the checks; nothing starts until the lock is free.
  const started = l.indexOf("starting the child's hsd and waiting for it to report ready");
  assert.ok(waited >= 0 && waited < freed && freed < started, l.join("\n"));
  // The apt run ended on its own (the install never killed it).
  assert.match(await sh(ssh1, "cat /tmp/apt-long.log"), /Reading package lists/);
  assert.equal(await sh(ssh1, "systemctl is-active hsd"), "active");
});

test("real guest: an sshd that accepts TCP but never speaks fails the connect within the connect timeout, not the command timeout (lesson 5)", { timeout: 600_000 }, async () => {
  assert.ok(vm1 && ssh1, "needs the first test's guest");
  // The listener stopped (SIGSTOP): the kernel still completes the TCP handshake, no SSH banner follows.
  await sh(ssh1, "kill -STOP $(cat /run/sshd.pid)");
  try {
    const err = await rejection(provider({ connectTimeoutMs: 5000, sshWaitMs: 12_000, commandTimeoutMs: 600_000 }).install(vm1, spec(), ctx()));
    assert.equal(err.code, "ConnectTimeout");
    const direct = await rejection(GuestSsh.connect({ host: vm1.address, privateKey: await readFile(keys.priv), connectTimeoutMs: 5000 }));
    assert.equal(direct.code, "ConnectTimeout");
  } finally {
    await sh(ssh1, "kill -CONT $(cat /run/sshd.pid)");
  }
});

test("real guest: cloud-init still running when install starts is waited for within the budget; ended in error it fails with its state and hint", { timeout: 1_800_000 }, async () => {
  // hsd's own snippet plus a last runcmd that takes a while and then fails: cloud-init is
  // `running` while sshd already lets root in, then ends in `error`.
  const slowThenFail = (c: { name: string; keys: readonly string[] }) => [
    "#cloud-config", `hostname: ${c.name.replace(/^hsd-/, "")}`, "disable_root: false", "users:", "  - name: root", "    ssh_authorized_keys:",
    ...c.keys.map((k) => `      - ${k}`), "runcmd:", "  - [sh, -c, 'sleep 45; echo hsd-test-failure >&2; exit 3']", "",
  ].join("\n");
  const p = provider({ userData: slowThenFail });
  const c = ctx();
  const child = await p.provision("l2", 1, c);
  const vm = await p.boot(child, c).catch(async (e: Error) => { throw new Error(`${e.message}\n${await failureContext(Number(child.data.vmid))}`); });
  try {
    const ssh = await rootSsh(vm.address);
    const state = await sh(ssh, "cloud-init status");
    ssh.close();
    timings.cloudInitStateAtSshLogin = state.includes("running") ? 1 : 0;
    // A budget shorter than the runcmd: the wait ends, typed, naming the state; nothing hangs.
    const short = await rejection(provider({ userData: slowThenFail, cloudInitTimeoutMs: 5000 }).install(vm, { ...spec(), name: "l2" }, ctx()));
    assert.equal(short.code, "CloudInit");
    assert.equal(short.details.state, "running");
    // A long enough budget: the wait lasts until cloud-init ends, which it does in error.
    const events: Emitted[] = [];
    const failed = await rejection(p.install(vm, { ...spec(), name: "l2" }, ctx(events)));
    assert.equal(failed.code, "CloudInit");
    assert.equal(failed.details.state, "error");
    assert.match(failed.message, /scripts_user|runcmd|scripts-user/);
    assert.ok(logs(events).some((m) => /^cloud-init is (running|error)/.test(m)), logs(events).join("\n"));
  } finally {
    // ACPI shutdown through the API: the guest powers itself off; the task ends when QEMU has exited.
    const client = clientFor(sim!);
    const qemu = sim!.qemuVm(Number(child.data.vmid));
    const upid = await client.api("POST /nodes/{node}/qemu/{vmid}/status/shutdown", { node: sim!.node, vmid: Number(child.data.vmid) });
    await client.waitTask(upid, { pollInitialMs: 500, pollMaxMs: 2000, timeoutMs: 180_000 });
    assert.equal(sim!.vms.get(Number(child.data.vmid))?.status, "stopped");
    assert.ok(qemu && qemu.proc.exitCode !== null, "QEMU exited");
  }
});
