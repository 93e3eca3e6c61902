// A configure step that reboots a real systemd machine itself, as homestak's
// pve-config does (`systemctl reboot`, then sleep until killed), in a real
// Debian 12 guest (QEMU, TCG): hsd runs as hsd.service (KillMode=mixed: the
// stop's SIGTERM reaches hsd only) as a level below 0, the test (standing in
// for the parent) calls Configure over the service's socket, the step queues
// the reboot, systemd stops hsd.service with the machine going down, and hsd
// (asking the real systemctl) ends the step as that reboot: journaled, then
// logged as resumed after the boot, then a clean stop. The guest's disk is a
// snapshot and QEMU runs with -no-reboot, so the evidence is hsd's own log,
// forwarded by journald to the serial console; the resume after a boot is
// covered on the local provider (test/e2e/nest-unannounced-reboot.test.ts).
// Run by `npm run test:guests` (root, qemu-system-x86, debootstrap).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { bootGuest, guestImage, type Guest } from "./qemu-guest.js";
import { generateEd25519KeyPair } from "../../src/ssh/level-keys.js";
import { bootstrapHsd, guestPaths } from "../../src/providers/pve/ssh-bootstrap.js";
import type { GuestSsh } from "../../src/providers/pve/guest-ssh.js";
import { grpcChildLink } from "../../src/rpc/grpc-child-link.js";
import type { LevelEvent } from "../../src/domain/events.js";

const ROOT = new URL("../../", import.meta.url).pathname;
const UNIT = await readFile(join(ROOT, "daemon/hsd.service"), "utf8");
const BOOT_MS = 300_000;

const timings: Record<string, number> = {};
const tmp = await mkdtemp(join(tmpdir(), "hsd-guest-reboot-"));
let guest: Guest | undefined;
let ssh: GuestSsh | undefined;
let relay: Server | undefined;
let fwd: InstanceType<typeof ssh2.Client> | undefined;
after(async () => {
  relay?.close();
  fwd?.end();
  ssh?.close();
  await guest?.stop();
  await rm(tmp, { recursive: true, force: true });
  console.log(`# guest reboot timings ${JSON.stringify(timings)}`);
});

async function sh(script: string, timeoutMs = 60_000): Promise<string> {
  assert.ok(ssh, "no guest session");
  const r = await ssh.exec("sh -s", { timeoutMs, stdin: `${script}\n` });
  assert.equal(r.code, 0, `guest: ${script}\nexit ${r.code}\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  return r.stdout.trim();
}

/** A local unix socket whose every connection is a new SSH stream to `remote` (a unix socket in the guest). */
async function forwardSocket(sshPort: number, privateKey: string, remote: string): Promise<string> {
  const client = new ssh2.Client();
  fwd = client;
  await new Promise<void>((resolve, reject) => {
    client.once("ready", () => resolve()).once("error", reject)
      .connect({ host: "127.0.0.1", port: sshPort, username: "root", privateKey, readyTimeout: 30_000 });
  });
  const path = join(tmp, "hsd.sock");
  relay = createServer((local) => {
    client.openssh_forwardOutStreamLocal(remote, (err, stream) => {
      if (err) { local.destroy(); return; }
      local.pipe(stream).pipe(local);
      local.on("error", () => stream.destroy());
      stream.on("error", () => local.destroy());
    });
  });
  await new Promise<void>((r) => relay!.listen(path, r));
  return path;
}

test("guest: a step runs `systemctl reboot` and sleeps; hsd.service, stopped with the machine going down, ends the step as that reboot and stops cleanly", { timeout: 1_500_000 }, async () => {
  const image = await guestImage();
  const keys = generateEd25519KeyPair("hsd-guest-reboot");
  guest = await bootGuest({ image, publicKey: keys.public, cpus: 2, memoryMiB: 1536 });
  ssh = await guest.ssh(keys.private, BOOT_MS);
  timings.bootToSshS = (Date.now() - guest.startedAt) / 1000;
  // The evidence must outlive the disk: journald copies every line (hsd's log included) to the serial console.
  await sh(`mkdir -p /etc/systemd/journald.conf.d /var/lib/hsd/homestak
printf '[Journal]\\nForwardToConsole=yes\\nTTYPath=/dev/ttyS0\\nMaxLevelConsole=info\\n' > /etc/systemd/journald.conf.d/console.conf
systemctl restart systemd-journald`);

  const bundle = join(tmp, "hsd-bundle.tar.gz");
  execFileSync(process.execPath, [join(ROOT, "scripts/bundle.mjs"), "--with-node", "--out", bundle], { stdio: "ignore", timeout: 180_000 });
  // A level below 0 (its parent is the test, reached over the service's own socket), with the step homestak's pve-config is.
  const step = "echo kernel installed; systemctl reboot; exec sleep 300";
  await bootstrapHsd(ssh, {
    bundle: await readFile(bundle), paths: guestPaths(""), unitText: UNIT,
    configYaml: `level: { name: g1, depth: 1 }
parent: { host: 10.0.2.2, port: 2222, host_key_fingerprint: "SHA256:cGFyZW50aG9zdGtleQ", public_key: ${JSON.stringify(keys.public.trim())} }
homestak: { root: /var/lib/hsd/homestak }
configure:
  steps:
    - name: pve-kernel
      cwd: .
      run: [sh, -c, ${JSON.stringify(step)}]
`,
    readyTimeoutMs: 120_000, commandTimeoutMs: 120_000, signal: AbortSignal.timeout(600_000), log: () => {},
  });
  const hsdPid = Number(await sh("systemctl show hsd -p MainPID --value"));

  const socket = await forwardSocket(guest.sshPort, keys.private, "/run/hsd/hsd.sock");
  const link = grpcChildLink({ target: `unix:${socket}`, commandMs: 60_000, closeTunnel: async () => {} });
  const events: LevelEvent[] = [];
  const t = Date.now();
  // The call ends however the machine's shutdown cuts it (our SSH session is stopped with it): only hsd's log is asserted.
  const call = link.configure((ev) => { events.push(ev); }, AbortSignal.timeout(BOOT_MS)).then(() => "ended", (e: Error) => `dropped: ${e.message}`);

  // QEMU runs with -no-reboot: the kernel's last word is "reboot: Restarting system".
  let console_ = "";
  for (const deadline = Date.now() + BOOT_MS; !/reboot: Restarting system/.test(console_); await new Promise((r) => setTimeout(r, 500))) {
    assert.ok(Date.now() < deadline, `the guest did not reboot:\n${console_.slice(-3000)}`);
    console_ = await guest.console();
  }
  timings.configureToRebootS = (Date.now() - t) / 1000;
  const stream = await call;
  console.log(`# configure stream: ${stream}; events ${JSON.stringify(events.map((e) => [e.kind, e.message]))}`);

  // hsd's own lines (JSON, from its pid) as the console has them, in order.
  const said = console_.split("\n").filter((l) => l.includes(`hsd[${hsdPid}]`) || l.includes(`"pid":${hsdPid}`))
    .map((l) => /"msg":"([^"]*)"/.exec(l)?.[1]).filter((m): m is string => m !== undefined);
  const at = (msg: string) => said.indexOf(msg);
  const goingDown = at("the machine is going down while configure steps run: they end with its reboot");
  const ended = at("the step ended while the machine is going down: resumed after the reboot");
  const resumes = at("the machine is going down under a configure step; it resumes after the boot");
  const stopped = at("hsd stopped");
  assert.ok(goingDown >= 0 && goingDown < ended && ended < resumes && resumes < stopped, said.join("\n"));
  assert.ok(!said.some((m) => /step .* failed|shutdown overran/.test(m)), said.join("\n"));
});
