// ssh-bootstrap against a real sshd on 127.0.0.1 with fake cloud-init, fuser
// and systemctl first on PATH: the install sequence, TOFU then pinning, and
// the connect timeout as its own error.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as net from "node:net";
import { startSshd, type SimSshd } from "../pve-sim/sim-sshd.js";
import { GuestSsh, bootstrapHsd } from "../../src/providers/pve/ssh-bootstrap.js";
import { HsError } from "../../src/errors/hs-error.js";

let sshd: SimSshd;
before(async () => { sshd = await startSshd(); });
after(async () => { await sshd.close(); });

async function rejection(p: Promise<unknown>): Promise<HsError> {
  try { await p; } catch (e) { assert.ok(e instanceof HsError, String(e)); return e; }
  assert.fail("expected a rejection");
}

async function fake(name: string, body: string): Promise<void> {
  await writeFile(join(sshd.binDir, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
}

test("trust on first use, then the pin holds; a changed key is refused", async () => {
  const first = await GuestSsh.connect({ host: "127.0.0.1", port: sshd.port, privateKey: sshd.clientKey });
  assert.equal(first.hostKeyFingerprint, sshd.hostKeyFingerprint);
  first.close();
  const pinned = await GuestSsh.connect({ host: "127.0.0.1", port: sshd.port, privateKey: sshd.clientKey, hostKeyFingerprint: sshd.hostKeyFingerprint });
  assert.equal((await pinned.exec("echo ok", { timeoutMs: 10_000 })).stdout, "ok\n");
  const slow = await rejection(pinned.exec("sleep 5", { timeoutMs: 100 }));
  assert.equal(slow.code, "CommandTimeout");
  pinned.close();
  const err = await rejection(GuestSsh.connect({ host: "127.0.0.1", port: sshd.port, privateKey: sshd.clientKey, hostKeyFingerprint: "SHA256:AAAA" }));
  assert.equal(err.code, "HostKeyMismatch");
});

test("connect timeout is separate and bounded", async () => {
  const held: net.Socket[] = [];
  const silent = net.createServer((s) => { held.push(s); });
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  try {
    const err = await rejection(GuestSsh.connect({ host: "127.0.0.1", port: (silent.address() as net.AddressInfo).port, privateKey: sshd.clientKey, connectTimeoutMs: 200 }));
    assert.equal(err.code, "ConnectTimeout");
  } finally {
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  }
});

test("bootstrap: waits for cloud-init and the apt lock, unpacks, installs, starts, waits for health", async () => {
  const d = sshd.dir;
  await fake("cloud-init", `echo "status: done"; echo ci >> ${d}/calls`);
  // The lock is held for the first two probes.
  await fake("fuser", `n=$(cat ${d}/fuser 2>/dev/null || echo 0); echo $((n+1)) > ${d}/fuser; [ "$n" -lt 2 ]`);
  await fake("systemctl", `echo "systemctl $*" >> ${d}/calls; [ "$*" = "enable --now hsd" ] && touch ${d}/started; exit 0`);
  await fake("hsd-health", `[ -f ${d}/started ]`);
  const src = join(d, "bundle-src");
  await mkdir(join(src, "dist"), { recursive: true });
  await writeFile(join(src, "dist/main.js"), "console.log('hsd')\n");
  execFileSync("tar", ["-czf", join(d, "bundle.tgz"), "-C", src, "."]);

  const ssh = await GuestSsh.connect({ host: "127.0.0.1", port: sshd.port, privateKey: sshd.clientKey, hostKeyFingerprint: sshd.hostKeyFingerprint });
  const logs: string[] = [];
  try {
    await bootstrapHsd(ssh, {
      bundle: await readFile(join(d, "bundle.tgz")), remoteDir: join(d, "opt/hsd"),
      configPath: join(d, "etc/homestak/hsd.yaml"), configYaml: "level:\n  name: l1\n",
      unitPath: join(d, "etc/systemd/system/hsd.service"), unitText: "[Service]\nExecStart=/opt/hsd/bin/hsd\n",
      healthCommand: "hsd-health", pathPrefix: sshd.binDir, pollMs: 10, signal: AbortSignal.timeout(60_000), log: (m) => logs.push(m),
    });
  } finally { ssh.close(); }
  assert.equal(await readFile(join(d, "opt/hsd/dist/main.js"), "utf8"), "console.log('hsd')\n");
  assert.equal((await stat(join(d, "etc/homestak/hsd.yaml"))).mode & 0o777, 0o600);
  assert.match(await readFile(join(d, "etc/systemd/system/hsd.service"), "utf8"), /ExecStart/);
  assert.deepEqual((await readFile(join(d, "calls"), "utf8")).trim().split("\n"), [
    "ci", "systemctl stop apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service",
    "systemctl daemon-reload", "systemctl enable --now hsd",
  ]);
  assert.equal((await readFile(join(d, "fuser"), "utf8")).trim(), "3");
  assert.ok(logs.includes("waiting for apt/dpkg to release its lock"));
});
