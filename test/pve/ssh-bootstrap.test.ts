// ssh-bootstrap against a real sshd on 127.0.0.1 with fake cloud-init, fuser,
// systemctl (and node) first on PATH: the install sequence, its failures,
// TOFU then pinning, and the connect timeout as its own error.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as net from "node:net";
import ssh2 from "ssh2";
import { generateEd25519KeyPair } from "../../src/ssh/level-keys.js";
import { startSshd, type SimSshd } from "../pve-sim/sim-sshd.js";
import { GuestSsh } from "../../src/providers/pve/guest-ssh.js";
import { bootstrapHsd, guestPaths } from "../../src/providers/pve/ssh-bootstrap.js";
import { HsError } from "../../src/domain/errors.js";
import { ADDRESS_PLACEHOLDER, bootScript, writeBootCd } from "../../src/providers/pve/boot-cd.js";
import { sha256File } from "../../src/images/image-digest.js";
import { runCommand } from "../../src/util/command-runner.js";
import { cdromDir, unpackCdroms } from "../pve-sim/sim-cloud-init.js";
import { rejection } from "./helpers.js";

let sshd: SimSshd;
before(async () => { sshd = await startSshd(); });
after(async () => { await sshd.close(); });


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

test("the session turns Nagle off before it connects and offers only its key (no `none` round trip)", async () => {
  // An in-process ssh2 server records what the client tries; Socket.setNoDelay is watched for the client's socket.
  const methods: string[] = [];
  const server = new ssh2.Server({ hostKeys: [generateEd25519KeyPair("host").private] }, (client) => {
    client.on("error", () => {});
    client.on("authentication", (ctx) => { methods.push(ctx.method); if (ctx.method === "publickey") ctx.accept(); else ctx.reject(["publickey"]); });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const original = net.Socket.prototype.setNoDelay;
  const calls: { sock: net.Socket; on: boolean | undefined; connected: boolean }[] = [];
  net.Socket.prototype.setNoDelay = function (this: net.Socket, on?: boolean) {
    calls.push({ sock: this, on, connected: !this.connecting && this.remotePort !== undefined });
    return original.call(this, on);
  };
  try {
    const ssh = await GuestSsh.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port, privateKey: sshd.clientKey });
    const sock = (ssh as unknown as { conn: { _sock: net.Socket } }).conn._sock;
    ssh.close();
    const mine = calls.filter((c) => c.sock === sock);
    assert.deepEqual(mine.map((c) => c.on), [true], "setNoDelay(true) on the session's socket");
    assert.equal(mine[0]!.connected, false, "set before the handshake's first byte");
    assert.ok(methods.length > 0 && methods.every((m) => m === "publickey"), `auth methods tried: ${methods.join(", ")}`);
  } finally {
    net.Socket.prototype.setNoDelay = original;
    await new Promise((r) => server.close(r));
  }
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

const READY = { pid: 4242, socket: "/var/lib/hsd/run/hsd.sock", sshHost: "10.0.0.5", sshPort: 2222, hostKeyFingerprint: "SHA256:abc", publicKey: "ssh-ed25519 AAAA l1", version: "0.1.0" };

async function tinyBundle(name: string, withNode: boolean): Promise<Buffer> {
  const src = join(sshd.dir, `${name}-src`);
  await mkdir(join(src, "dist"), { recursive: true });
  await writeFile(join(src, "dist/main.js"), "console.log('hsd')\n");
  if (withNode) { await mkdir(join(src, "bin"), { recursive: true }); await writeFile(join(src, "bin/node"), "#!/bin/sh\n", { mode: 0o755 }); }
  execFileSync("tar", ["-czf", join(sshd.dir, `${name}.tgz`), "-C", src, "."]);
  return readFile(join(sshd.dir, `${name}.tgz`));
}

async function connect(): Promise<GuestSsh> {
  return GuestSsh.connect({ host: "127.0.0.1", port: sshd.port, privateKey: sshd.clientKey, hostKeyFingerprint: sshd.hostKeyFingerprint });
}

test("bootstrap: waits for cloud-init and the apt lock, unpacks, installs, restarts, returns ready.json", async () => {
  const d = sshd.dir;
  const paths = guestPaths(join(d, "vm1"));
  await fake("cloud-init", `echo "status: done"; echo ci >> ${d}/calls`);
  // The lock is held for the first two probes.
  await fake("fuser", `n=$(cat ${d}/fuser 2>/dev/null || echo 0); echo $((n+1)) > ${d}/fuser; [ "$n" -lt 2 ]`);
  await fake("systemctl", `echo "systemctl $*" >> ${d}/calls
[ "$*" = "restart hsd" ] && mkdir -p ${join(d, "vm1/var/lib/hsd/run")} && echo '${JSON.stringify(READY)}' > ${paths.readyFile}
[ "$1" = is-failed ] && exit 1
exit 0`);
  // A stale ready.json from an earlier install must not count.
  await mkdir(join(d, "vm1/var/lib/hsd/run"), { recursive: true });
  await writeFile(paths.readyFile, JSON.stringify({ ...READY, pid: 1 }));
  // An earlier install's files must not survive the new bundle.
  await mkdir(join(paths.installDir, "dist"), { recursive: true });
  await writeFile(join(paths.installDir, "dist/old.js"), "old\n");

  const ssh = await connect();
  // Every SSH session is a round trip, a fork and a login shell on the child: count them.
  let sessions = 0;
  const counted = { exec: (cmd: string, opts: Parameters<GuestSsh["exec"]>[1]) => { sessions++; return ssh.exec(cmd, opts); } } as GuestSsh;
  const logs: string[] = [];
  let ready;
  try {
    ready = await bootstrapHsd(counted, {
      bundle: await tinyBundle("b1", true), paths, configYaml: "level:\n  name: l1\n", unitText: "[Service]\nExecStart=/opt/hsd/bin/node\n",
      pathPrefix: sshd.binDir, pollMs: 10, signal: AbortSignal.timeout(60_000), log: (m) => logs.push(m),
    });
  } finally { ssh.close(); }
  assert.deepEqual(ready, READY);
  assert.equal(await readFile(join(paths.installDir, "dist/main.js"), "utf8"), "console.log('hsd')\n");
  await assert.rejects(stat(join(paths.installDir, "dist/old.js")));
  await assert.rejects(stat(`${paths.installDir}.next`));
  assert.equal((await stat(paths.configPath)).mode & 0o777, 0o600);
  assert.equal(await readFile(paths.configPath, "utf8"), "level:\n  name: l1\n");
  assert.match(await readFile(paths.unitPath, "utf8"), /ExecStart/);
  assert.deepEqual((await readFile(join(d, "calls"), "utf8")).trim().split("\n"), [
    "ci", "systemctl stop apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service",
    // A systemd that does not say it has the unit loaded and current gets one reload; enable's own is turned off.
    "systemctl show -p LoadState -p NeedDaemonReload hsd", "systemctl daemon-reload", "systemctl enable --no-reload hsd", "systemctl restart hsd",
  ]);
  assert.equal((await readFile(join(d, "fuser"), "utf8")).trim(), "3");
  // cloud-init (done: no --wait), the timers with the first lock probe, two more probes,
  // the bundle's copy beside them, then one session for the swap, the files and the start.
  assert.equal(sessions, 6);
  assert.equal((await stat(join(paths.binDir, "hsd"))).mode & 0o777, 0o755);
  assert.match(await readFile(join(paths.binDir, "hsd"), "utf8"), /^#!\/bin\/sh\nexec .*\/bin\/node .*\/bin\/hsd\.js "\$@"\n$/);
  assert.equal((await stat(paths.unitPath)).mode & 0o777, 0o644);
  assert.ok(logs.some((l) => l.startsWith("waiting for apt/dpkg to release its lock")), logs.join("\n"));
});

test("bootstrap: no daemon-reload when systemd has hsd.service loaded and current (a fresh VM); one when its file changed since", async () => {
  const d = sshd.dir;
  const paths = guestPaths(join(d, "vm8"));
  await fake("cloud-init", `echo "status: done"`);
  await fake("fuser", "exit 1");
  // What systemd answers for the unit (systemctl show prints the properties in its own order, not the -p order).
  await fake("systemctl", `echo "systemctl $*" >> ${d}/calls8
[ "$1" = show ] && cat ${d}/show8
[ "$*" = "restart hsd" ] && mkdir -p ${join(d, "vm8/var/lib/hsd/run")} && echo '${JSON.stringify(READY)}' > ${paths.readyFile}
[ "$1" = is-failed ] && exit 1
exit 0`);
  const install = async (show: string) => {
    await writeFile(join(d, "show8"), show);
    await rm(join(d, "calls8"), { force: true });
    const ssh = await connect();
    try {
      assert.deepEqual(await bootstrapHsd(ssh, {
        bundle: await tinyBundle("b8", true), paths, configYaml: "x: 1\n", unitText: "[Service]\n", pathPrefix: sshd.binDir,
        signal: AbortSignal.timeout(60_000), log: () => {},
      }), READY);
    } finally { ssh.close(); }
    return (await readFile(join(d, "calls8"), "utf8")).trim().split("\n").filter((l) => !l.includes("is-failed") && !l.includes("apt-daily"));
  };
  const show = "systemctl show -p LoadState -p NeedDaemonReload hsd";
  assert.deepEqual(await install("LoadState=loaded\nNeedDaemonReload=no\n"), [show, "systemctl enable --no-reload hsd", "systemctl restart hsd"]);
  assert.deepEqual(await install("NeedDaemonReload=no\nLoadState=loaded\n"), [show, "systemctl enable --no-reload hsd", "systemctl restart hsd"]);
  assert.deepEqual(await install("LoadState=loaded\nNeedDaemonReload=yes\n"), [show, "systemctl daemon-reload", "systemctl enable --no-reload hsd", "systemctl restart hsd"]);
  assert.deepEqual(await install("LoadState=not-found\nNeedDaemonReload=no\n"), [show, "systemctl daemon-reload", "systemctl enable --no-reload hsd", "systemctl restart hsd"]);
});

test("bootstrap: the bundle streams into the staging dir while the checks run; nothing else changes until they pass", async () => {
  const d = sshd.dir;
  const paths = guestPaths(join(d, "vm6"));
  const staged = `${paths.installDir}.next/hsd-bundle.tar.gz`;
  // cloud-init answers only once the whole bundle is staged (at most 20 s): copied one after the other, it never would.
  // What it sees then: the install dir and the config must not be there yet.
  await fake("cloud-init", `i=0; until [ -e ${staged} ]; do i=$((i+1)); [ $i -lt 400 ] || { echo "status: error"; exit 1; }; /bin/sleep 0.05; done
[ -e ${paths.installDir} ] && echo installed >> ${d}/seen6; [ -e ${paths.configPath} ] && echo config >> ${d}/seen6; echo staged >> ${d}/seen6
echo "status: done"`);
  await fake("fuser", "exit 1");
  await fake("systemctl", `[ "$*" = "restart hsd" ] && mkdir -p ${join(d, "vm6/var/lib/hsd/run")} && echo '${JSON.stringify(READY)}' > ${paths.readyFile}
[ "$1" = is-failed ] && exit 1
exit 0`);
  const ssh = await connect();
  try {
    const bundle = await tinyBundle("b6", true);
    const ready = await bootstrapHsd(ssh, {
      bundle, paths, configYaml: "x: 1\n", unitText: "[Service]\n", pathPrefix: sshd.binDir, signal: AbortSignal.timeout(60_000), log: () => {},
    });
    assert.deepEqual(ready, READY);
    assert.deepEqual((await readFile(join(d, "seen6"), "utf8")).trim().split("\n"), ["staged"]);
    assert.deepEqual(await readFile(join(paths.installDir, "hsd-bundle.tar.gz")), bundle);
    await assert.rejects(stat(`${paths.installDir}.next`));
  } finally { ssh.close(); }
});

test("bootstrap: a failed copy ends the checks at once and fails as the copy", async () => {
  // cloud-init still running, and its --wait would take the whole budget (10 min).
  await fake("cloud-init", `case "$*" in
  "status") echo "status: running" ;;
  *) echo $$ > ${sshd.dir}/ci7.pid; exec /bin/sleep 600 ;;
esac`);
  await fake("fuser", "exit 1");
  await fake("systemctl", "exit 0");
  const ssh = await connect();
  try {
    const good = await tinyBundle("b7", true);
    const bad = Buffer.concat([good.subarray(0, 20), Buffer.alloc(64 * 1024, 0x5a)]);
    const err = await rejection(bootstrapHsd(ssh, {
      bundle: bad, paths: guestPaths(join(sshd.dir, "vm7")), configYaml: "x: 1\n", unitText: "", pathPrefix: sshd.binDir,
      signal: AbortSignal.timeout(20_000), log: () => {},
    }));
    assert.equal(err.code, "ProviderFailed");
    assert.equal(err.details.step, "bundle unpack");
    await assert.rejects(stat(guestPaths(join(sshd.dir, "vm7")).installDir));
  } finally {
    ssh.close();
    // A closed session does not end a command that never writes: the fake's wait is ended here.
    const pid = Number(await readFile(join(sshd.dir, "ci7.pid"), "utf8").catch(() => "0"));
    if (pid > 0) try { process.kill(pid, "SIGKILL"); } catch { /* already gone */ }
  }
});

test("bootstrap: no node >= 20 on the child and none in the bundle is a clear failure", async () => {
  await fake("cloud-init", "exit 0");
  await fake("fuser", "exit 1");
  await fake("systemctl", "exit 0");
  await fake("node", "echo v18.19.1");
  const ssh = await connect();
  try {
    const err = await rejection(bootstrapHsd(ssh, {
      bundle: await tinyBundle("b2", false), paths: guestPaths(join(sshd.dir, "vm2")), configYaml: "x: 1\n", unitText: "",
      pathPrefix: sshd.binDir, signal: AbortSignal.timeout(60_000), log: () => {},
    }));
    assert.equal(err.code, "ProviderFailed");
    assert.equal(err.details.step, "node");
    assert.match(String(err.details.hint), /--with-node/);
  } finally {
    ssh.close();
    await rm(join(sshd.binDir, "node"), { force: true });
  }
});

test("bootstrap: the child's node is judged by `node --version` alone (no V8 start), and then used", async () => {
  await fake("cloud-init", "exit 0");
  await fake("fuser", "exit 1");
  await fake("systemctl", `[ "$1" = is-failed ] && exit 0; exit 0`);
  // Anything but --version fails: the check must not start a script.
  await fake("node", `[ "$1" = --version ] && { echo v22.3.0; exit 0; }; exit 1`);
  const ssh = await connect();
  try {
    const paths = guestPaths(join(sshd.dir, "vm2b"));
    const err = await rejection(bootstrapHsd(ssh, {
      bundle: await tinyBundle("b2b", false), paths, configYaml: "x: 1\n", unitText: "",
      pathPrefix: sshd.binDir, readyTimeoutMs: 60_000, signal: AbortSignal.timeout(60_000), log: () => {},
    }));
    // Past the node step: the fake service "fails" before ready.
    assert.equal(err.details.step, "ready");
    assert.equal(execFileSync("readlink", [join(paths.installDir, "bin/node")], { encoding: "utf8" }).trim(), join(sshd.binDir, "node"));
  } finally {
    ssh.close();
    await rm(join(sshd.binDir, "node"), { force: true });
  }
});

test("bootstrap: the bundle is unpacked as it arrives and kept whole; one tar refuses fails as the unpack and leaves the installed one", async () => {
  await fake("cloud-init", "exit 0");
  await fake("fuser", "exit 1");
  await fake("systemctl", `[ "$1" = is-failed ] && exit 0; exit 0`);
  // tar as the child runs it, recorded: it must read the bundle from the copy's stream.
  await fake("tar", `echo "tar $*" >> ${sshd.dir}/tar-calls\nexec /bin/tar "$@"`);
  const ssh = await connect();
  try {
    const paths = guestPaths(join(sshd.dir, "vm2c"));
    const good = await tinyBundle("b2c", true);
    const opts = { paths, configYaml: "x: 1\n", unitText: "", pathPrefix: sshd.binDir, readyTimeoutMs: 60_000, signal: AbortSignal.timeout(60_000), log: () => {} };
    // The fake service "fails" before ready: by then the bundle is in place.
    assert.equal((await rejection(bootstrapHsd(ssh, { ...opts, bundle: good }))).details.step, "ready");
    assert.deepEqual(await readFile(join(paths.installDir, "hsd-bundle.tar.gz")), good);
    assert.equal(await readFile(join(paths.installDir, "dist/main.js"), "utf8"), "console.log('hsd')\n");
    assert.equal((await readFile(join(sshd.dir, "tar-calls"), "utf8")).trim(), "tar -xzf -");
    // Past tar's first blocks the gzip stream is garbage: tar refuses it after reading part of it.
    const bad = Buffer.concat([good.subarray(0, 20), Buffer.alloc(64 * 1024, 0x5a)]);
    const err = await rejection(bootstrapHsd(ssh, { ...opts, bundle: bad }));
    assert.equal(err.code, "ProviderFailed");
    assert.equal(err.details.step, "bundle unpack");
    assert.deepEqual(await readFile(join(paths.installDir, "hsd-bundle.tar.gz")), good, "the installed bundle is untouched");
  } finally {
    ssh.close();
    await rm(join(sshd.binDir, "tar"), { force: true });
  }
});

test("bootstrap: the wait for ready.json looks at the file every 20 ms and asks systemd about the unit every tenth look", async () => {
  const d = sshd.dir;
  const paths = guestPaths(join(d, "vm2d"));
  await fake("cloud-init", "exit 0");
  await fake("fuser", "exit 1");
  await fake("systemctl", `[ "$1" = is-failed ] && { echo x >> ${d}/is-failed; exit 1; }; exit 0`);
  // The remote loop's sleep, counted: ready.json appears after the 25th (no real waiting).
  // Only the ready loop's sleeps are counted: the host's login files (run by sshd for
  // each session, and the bundle's copy is a session beside the checks') may sleep too.
  await fake("sleep", `case "$(ps -o args= -p $PPID)" in *until*) ;; *) exec /bin/sleep "$@" ;; esac; echo "$1" >> ${d}/sleeps; [ $(wc -l < ${d}/sleeps) -ge 25 ] && mkdir -p ${join(d, "vm2d/var/lib/hsd/run")} && echo '${JSON.stringify(READY)}' > ${paths.readyFile}; exit 0`);
  const ssh = await connect();
  try {
    const ready = await bootstrapHsd(ssh, {
      bundle: await tinyBundle("b2d", true), paths, configYaml: "x: 1\n", unitText: "", pathPrefix: sshd.binDir,
      readyTimeoutMs: 60_000, signal: AbortSignal.timeout(60_000), log: () => {},
    });
    assert.equal(ready.pid, READY.pid);
    const sleeps = (await readFile(join(d, "sleeps"), "utf8")).trim().split("\n");
    assert.equal(sleeps.length, 25);
    assert.ok(sleeps.every((x) => x === "0.02"), sleeps.join(" "));
    assert.equal((await readFile(join(d, "is-failed"), "utf8")).trim().split("\n").length, 3, "asked at looks 0, 10 and 20");
  } finally {
    ssh.close();
    await rm(join(sshd.binDir, "sleep"), { force: true });
  }
});

test("bootstrap: a service that fails before ready ends the wait at once; one that never gets ready hits the bound", async () => {
  await fake("cloud-init", "exit 0");
  await fake("fuser", "exit 1");
  // The child's node is used (symlinked into bin/) when the bundle has none.
  await fake("systemctl", `[ "$1" = is-failed ] && exit 0; exit 0`);
  const ssh = await connect();
  try {
    const paths = guestPaths(join(sshd.dir, "vm3"));
    const opts = { bundle: await tinyBundle("b3", false), paths, configYaml: "x: 1\n", unitText: "", pathPrefix: sshd.binDir, log: () => {} };
    const failed = await rejection(bootstrapHsd(ssh, { ...opts, readyTimeoutMs: 60_000, signal: AbortSignal.timeout(60_000) }));
    assert.equal(failed.code, "ProviderFailed");
    assert.equal(failed.details.step, "ready");
    const linked = execFileSync("readlink", [join(paths.installDir, "bin/node")], { encoding: "utf8" }).trim();
    assert.ok(linked.endsWith("node"), linked);

    await fake("systemctl", `[ "$1" = is-failed ] && exit 1; exit 0`);
    const slow = await rejection(bootstrapHsd(ssh, { ...opts, readyTimeoutMs: 1000, signal: AbortSignal.timeout(60_000) }));
    assert.equal(slow.code, "CommandTimeout");
    assert.equal(slow.details.step, "ready");
  } finally { ssh.close(); }
});

test("bootstrap: cloud-init ended in error fails typed with its state and what failed; still running past the budget fails typed as running", async () => {
  await fake("fuser", "exit 1");
  await fake("systemctl", "exit 0");
  await fake("cloud-init", `case "$*" in
  status) echo "status: error" ;;
  "status --wait") echo "status: error"; exit 1 ;;
  "status --long") printf 'status: error\\ntime: Mon, 30 Nov 2026 12:00:00 +0000\\ndetail:\\n(scripts_user, RuntimeError(runparts: 1 failed))\\n'; exit 1 ;;
esac`);
  const ssh = await connect();
  try {
    const opts = { bundle: await tinyBundle("b4", true), paths: guestPaths(join(sshd.dir, "vm4")), configYaml: "x: 1\n", unitText: "", pathPrefix: sshd.binDir };
    const logs: string[] = [];
    const failed = await rejection(bootstrapHsd(ssh, { ...opts, signal: AbortSignal.timeout(60_000), log: (m) => logs.push(m) }));
    assert.equal(failed.code, "CloudInit");
    assert.equal(failed.details.state, "error");
    assert.match(failed.message, /scripts_user/);
    assert.deepEqual(logs.filter((l) => !l.startsWith("copying")), ["cloud-init is error"]);
    // The bundle staged beside the checks is removed, and nothing was swapped in.
    await assert.rejects(stat(`${opts.paths.installDir}.next`));
    await assert.rejects(stat(opts.paths.installDir));

    await fake("cloud-init", `case "$*" in
  "status --wait") sleep 30 ;;
  *) echo "status: running" ;;
esac`);
    logs.length = 0;
    const running = await rejection(bootstrapHsd(ssh, { ...opts, cloudInitTimeoutMs: 1000, signal: AbortSignal.timeout(60_000), log: (m) => logs.push(m) }));
    assert.equal(running.code, "CloudInit");
    assert.equal(running.details.state, "running");
    assert.match(logs.find((l) => l.startsWith("cloud-init")) ?? "", /^cloud-init is running; waiting for it/);
  } finally { ssh.close(); }
});

test("bootstrap: a file the child cannot write names that file, and nothing is started", async () => {
  await fake("cloud-init", "exit 0");
  await fake("fuser", "exit 1");
  await fake("systemctl", `echo "systemctl $*" >> ${sshd.dir}/calls5; exit 0`);
  const paths = guestPaths(join(sshd.dir, "vm5"));
  // /usr/local/bin is a file here: the launchers cannot go in.
  await mkdir(join(sshd.dir, "vm5/usr/local"), { recursive: true });
  await writeFile(paths.binDir, "not a directory\n");
  const ssh = await connect();
  try {
    const err = await rejection(bootstrapHsd(ssh, {
      bundle: await tinyBundle("b5", true), paths, configYaml: "x: 1\n", unitText: "[Service]\n", pathPrefix: sshd.binDir,
      signal: AbortSignal.timeout(60_000), log: () => {},
    }));
    assert.equal(err.code, "ProviderFailed");
    assert.equal(err.details.step, `write ${paths.binDir}/hsd`);
    assert.equal(await readFile(paths.configPath, "utf8"), "x: 1\n");
    assert.deepEqual((await readFile(join(sshd.dir, "calls5"), "utf8")).trim().split("\n"), [
      "systemctl stop apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service",
    ]);
  } finally { ssh.close(); }
});

test("boot CD: its script installs and starts hsd; the install then finds it in one round trip after the checks, or installs over SSH when it differs", async () => {
  const d = sshd.dir;
  const paths = guestPaths(join(d, "vm9"));
  await fake("cloud-init", `echo "status: done"`);
  await fake("fuser", "exit 1");
  // systemd's answers for the one unit: enable, a start (blocking or not) writes ready.json, is-active says so.
  await fake("systemctl", `echo "systemctl $*" >> ${d}/calls9
case "$*" in
  "start --no-block hsd"|"restart hsd") mkdir -p ${join(d, "vm9/var/lib/hsd/run")} && echo '${JSON.stringify(READY)}' > ${paths.readyFile}; : > ${d}/active9 ;;
  "is-active hsd") [ -e ${d}/active9 ] && { echo active; exit 0; }; echo inactive; exit 3 ;;
  "is-failed --quiet hsd") exit 1 ;;
esac
exit 0`);
  // The CD as writeBootCd makes it (genisoimage), unpacked as the VM would read it.
  const bundlePath = join(d, "b9.tgz");
  await writeFile(bundlePath, await tinyBundle("b9", true));
  const bundleSha256 = await sha256File(bundlePath);
  const cdConfig = `level:\n  name: l1\nssh:\n  advertise_host: ${ADDRESS_PLACEHOLDER}\n`;
  const config = "level:\n  name: l1\nssh:\n  advertise_host: 127.0.0.1\n";
  const isoDir = join(d, "iso9");
  await mkdir(isoDir, { recursive: true });
  const cd = await writeBootCd({
    isoDir, vmid: 109, bundlePath, bundleSha256, configYaml: cdConfig,
    script: bootScript({ paths, unitText: "[Service]\nExecStart=/usr/local/bin/hsd run\n", parentHost: "127.0.0.1" }),
    commands: runCommand, signal: AbortSignal.timeout(60_000),
  });
  assert.equal(cd.file, "hsd-109.iso");
  assert.equal((await stat(cd.path)).mode & 0o777, 0o600);
  assert.deepEqual((await readdir(isoDir)).sort(), ["hsd-109.iso"], "no temp file beside it");
  const unpacked = join(d, "vm9-cd");
  await unpackCdroms(unpacked, { ide3: "local:iso/hsd-109.iso,media=cdrom" }, () => readFile(cd.path));
  const mounted = join(cdromDir(unpacked), cd.label);

  const ssh = await connect();
  let sessions = 0;
  const counted = { exec: (cmd: string, opts: Parameters<GuestSsh["exec"]>[1]) => { sessions++; return ssh.exec(cmd, opts); } } as GuestSsh;
  try {
    // cloud-init's runcmd: the script from the CD (its path is how it finds the CD's other files).
    const bootOnce = async () => {
      await rm(join(d, "active9"), { force: true });
      await rm(join(d, "calls9"), { force: true });
      const r = await ssh.exec(`PATH=${sshd.binDir}:"$PATH" sh ${mounted}/boot-install.sh`, { timeoutMs: 30_000 });
      assert.equal(r.code, 0, r.stderr);
      return r;
    };
    const boot = await bootOnce();
    assert.match(boot.stdout, /hsd boot install: exit 0 \(address 127\.0\.0\.1\)/);
    assert.equal(await readFile(paths.configPath, "utf8"), config, "the CD's config with the address the VM reaches its parent from");
    assert.equal((await stat(paths.configPath)).mode & 0o777, 0o600);
    assert.equal(await readFile(join(paths.installDir, "dist/main.js"), "utf8"), "console.log('hsd')\n");
    assert.deepEqual(await readFile(join(paths.installDir, "hsd-bundle.tar.gz")), await readFile(bundlePath));
    assert.deepEqual((await readFile(join(d, "calls9"), "utf8")).trim().split("\n"), [
      "systemctl show -p LoadState -p NeedDaemonReload hsd", "systemctl daemon-reload", "systemctl enable --no-reload hsd", "systemctl start --no-block hsd",
    ]);

    // The install finds that very bundle and config running: no copy, no restart.
    await rm(join(d, "calls9"));
    sessions = 0;
    const logs: string[] = [];
    const sha = (s: string) => createHash("sha256").update(s).digest("hex");
    const opts = {
      bundle: await readFile(bundlePath), paths, configYaml: config, unitText: "[Service]\n", pathPrefix: sshd.binDir,
      signal: AbortSignal.timeout(60_000), log: (m: string) => logs.push(m),
    };
    assert.deepEqual(await bootstrapHsd(counted, { ...opts, booted: { bundleSha256, configSha256: sha(config) } }), READY);
    // cloud-init, the apt lock, then hsd found: three sessions.
    assert.equal(sessions, 3);
    assert.ok(logs.some((l) => l.startsWith("hsd 0.1.0 started from the boot CD is running")), logs.join("\n"));
    assert.ok(!logs.some((l) => l.startsWith("copying the hsd bundle")), logs.join("\n"));
    assert.ok(!(await readFile(join(d, "calls9"), "utf8")).includes("restart"));

    // Another config than the one this level would write: the install goes on over SSH and restarts hsd with its own.
    await bootOnce();
    logs.length = 0;
    const other = "level:\n  name: l1\nssh:\n  advertise_host: 127.0.0.1\nlog:\n  level: debug\n";
    assert.deepEqual(await bootstrapHsd(counted, { ...opts, configYaml: other, booted: { bundleSha256, configSha256: sha(other) } }), READY);
    assert.ok(logs.some((l) => l.includes("its config differs from this level's") && l.endsWith("installing it over SSH")), logs.join("\n"));
    assert.ok(logs.some((l) => l.startsWith("copying the hsd bundle")), logs.join("\n"));
    assert.equal(await readFile(paths.configPath, "utf8"), other);
    assert.match(await readFile(join(d, "calls9"), "utf8"), /systemctl restart hsd/);

    // Another bundle than this level's: the same.
    await bootOnce();
    logs.length = 0;
    assert.deepEqual(await bootstrapHsd(counted, { ...opts, booted: { bundleSha256: sha("another bundle"), configSha256: sha(config) } }), READY);
    assert.ok(logs.some((l) => l.includes("no bundle from it, or another one")), logs.join("\n"));
  } finally { ssh.close(); }
});

test("close: a VM that never closes its side of the connection (powered off, hung) does not keep the session's socket", async () => {
  // A relay to the test's sshd that, once the session has sent its FIN, never closes its own side:
  // what a VM that is gone looks like (its FIN never comes).
  const held: net.Socket[] = [];
  const relay = net.createServer({ allowHalfOpen: true }, (c) => {
    const up = net.connect(sshd.port, "127.0.0.1");
    held.push(c, up);
    c.pipe(up, { end: false });
    up.pipe(c, { end: false });
    c.on("end", () => { c.unpipe(up); up.unpipe(c); up.destroy(); });
    for (const s of [c, up]) s.on("error", () => {});
  });
  await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
  try {
    const ssh = await GuestSsh.connect({ host: "127.0.0.1", port: (relay.address() as net.AddressInfo).port, privateKey: sshd.clientKey });
    assert.equal((await ssh.exec("echo ok", { timeoutMs: 10_000 })).stdout, "ok\n");
    const sock = (ssh as unknown as { conn: { _sock: net.Socket } }).conn._sock;
    const closed = new Promise<void>((r) => sock.once("close", () => r()));
    ssh.close();
    // Bounded (every wait is): without the grace the socket stays half-closed until the peer's FIN.
    let bound: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<never>((_, reject) => { bound = setTimeout(() => reject(new Error("the socket is still open")), 30_000); })]);
    clearTimeout(bound);
    assert.ok(sock.destroyed);
  } finally {
    for (const s of held) s.destroy();
    await new Promise<void>((r) => relay.close(() => r()));
  }
});
