// The SSH endpoint against real clients: OpenSSH + git CLI, and ssh2 for the
// protocol corners OpenSSH will not produce. Every refusal is its own test.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server as NetServer } from "node:net";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { startLevel0, git, run, connectRaw, execRaw, makeKeyPair, sshCommand, cleanEnv, type Level0 } from "../helpers/git-fixtures.js";
import { readPkt } from "../../src/git/pkt-line.js";
import { levelPaths } from "../../src/config/level-layout.js";

let l0: Level0;
let api: NetServer;

before(async () => {
  l0 = await startLevel0();
  // A stand-in for the level's gRPC socket: echoes with a prefix so a test sees it reached *this* socket.
  const sock = levelPaths(l0.root).socket;
  await mkdir(join(l0.root, "run"), { recursive: true });
  api = createServer((s) => s.on("data", (d) => s.write(Buffer.concat([Buffer.from("api:"), d]))));
  await new Promise<void>((r) => api.listen(sock, r));
});
after(async () => {
  await new Promise<void>((r) => api.close(() => r()));
  await l0.close();
});

test("git CLI over OpenSSH clones every repo, fsck clean, commits match level 0", async () => {
  for (const name of l0.names) {
    const dest = join(l0.dir, "clones", name);
    await git(["clone", "-q", l0.url(name), dest], { env: l0.gitEnv() });
    await git(["fsck", "--strict", "--no-progress"], { cwd: dest });
    const served = await git(["--git-dir", join(l0.exportsDir, `${name}.git`), "rev-parse", "HEAD"]);
    assert.equal(await git(["rev-parse", "HEAD"], { cwd: dest }), served);
    const opHead = await git(["rev-parse", "HEAD"], { cwd: l0.checkouts[name] });
    assert.equal(await git(["rev-parse", "origin/main"], { cwd: dest }), opHead);
    assert.equal(await git(["rev-parse", "--abbrev-ref", "HEAD"], { cwd: dest }), "_working");
  }
});

test("only heads, tags and HEAD are advertised; other refs stay hidden", async () => {
  const exp = join(l0.exportsDir, "tofu.git");
  const head = await git(["--git-dir", exp, "rev-parse", "HEAD"]);
  await git(["--git-dir", exp, "update-ref", "refs/hsd/private", head]);
  await git(["--git-dir", exp, "update-ref", "refs/remotes/origin/main", head]);
  await git(["--git-dir", exp, "tag", "v1", head]);
  try {
    const out = await git(["ls-remote", l0.url("tofu")], { env: l0.gitEnv() });
    const refs = out.split("\n").map((l) => l.split("\t")[1]).sort();
    assert.deepEqual(refs, ["HEAD", "refs/heads/_working", "refs/heads/main", "refs/tags/v1"]);
  } finally {
    await git(["--git-dir", exp, "update-ref", "-d", "refs/hsd/private"]);
    await git(["--git-dir", exp, "update-ref", "-d", "refs/remotes/origin/main"]);
    await git(["--git-dir", exp, "tag", "-d", "v1"]);
  }
});

test("a client asking for protocol v2 (GIT_PROTOCOL env) still gets v0", async () => {
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    const r = await execRaw(c, "git-upload-pack 'tofu'", { env: { GIT_PROTOCOL: "version=2" }, input: Buffer.from("0000") });
    const first = readPkt(r.stdout);
    assert.ok(first && first.pkt.type === "data");
    assert.match(first.pkt.payload.toString(), /^[0-9a-f]{40} HEAD\0/);
    assert.equal(r.code, 0);
  } finally {
    c.end();
  }
  // And the git CLI asking for v2 over OpenSSH works, served as v0.
  const trace = await run("git", ["-c", "protocol.version=2", "ls-remote", l0.url("tofu")], {
    env: { ...l0.gitEnv(), GIT_TRACE_PACKET: "1" },
  });
  assert.equal(trace.code, 0, trace.stderr);
  assert.doesNotMatch(trace.stderr, /< version 2/);
  assert.match(trace.stderr, /< [0-9a-f]{40} HEAD\\0/);
});

test("unknown repo: git clone fails and the reply is an ERR pkt-line with status 128", async () => {
  const dest = join(l0.dir, "nope");
  const r = await run("git", ["clone", "-q", l0.url("not-a-repo"), dest], { env: l0.gitEnv() });
  assert.equal(r.code, 128);
  assert.equal(existsSync(dest), false);
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    const raw = await execRaw(c, "git-upload-pack 'not-a-repo'");
    const p = readPkt(raw.stdout);
    assert.ok(p && p.pkt.type === "data");
    assert.equal(p.pkt.payload.subarray(0, 4).toString(), "ERR ");
    assert.equal(raw.code, 128);
  } finally {
    c.end();
  }
});

test("path traversal ../../etc is refused as an unknown repo", async () => {
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    for (const cmd of ["git-upload-pack '../../etc'", "git-upload-pack '/../../etc/passwd'", "git-upload-pack 'tofu/../../etc'"]) {
      const raw = await execRaw(c, cmd);
      assert.equal(raw.code, 128);
      assert.equal(readPkt(raw.stdout)?.pkt.type, "data");
      assert.equal(raw.stdout.subarray(4, 8).toString(), "ERR ");
    }
  } finally {
    c.end();
  }
});

test("git push (receive-pack) is refused", async () => {
  const dest = join(l0.dir, "push-src");
  await git(["clone", "-q", l0.url("packer"), dest], { env: l0.gitEnv() });
  const before = await git(["--git-dir", join(l0.exportsDir, "packer.git"), "for-each-ref"]);
  const r = await run("git", ["push", "origin", "HEAD:refs/heads/evil"], { cwd: dest, env: l0.gitEnv() });
  assert.notEqual(r.code, 0);
  assert.equal(await git(["--git-dir", join(l0.exportsDir, "packer.git"), "for-each-ref"]), before);
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    assert.equal((await execRaw(c, "git-receive-pack 'packer'")).code, 1);
    assert.equal((await execRaw(c, "git-upload-archive 'packer'")).code, 1);
  } finally {
    c.end();
  }
});

test("an interactive shell is refused with exit status 1", async () => {
  const r = await run("ssh", [...sshCommand(l0.reader.privatePath, l0.knownHosts, l0.port).split(" ").slice(1), "hsd@127.0.0.1"], { env: cleanEnv() });
  assert.equal(r.code, 1);
});

test("any other exec is refused with exit status 1", async () => {
  const r = await run("ssh", [...sshCommand(l0.reader.privatePath, l0.knownHosts, l0.port).split(" ").slice(1), "hsd@127.0.0.1", "id"], { env: cleanEnv() });
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
});

test("the sftp subsystem is refused", async () => {
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    const err = await new Promise<Error | undefined>((resolve) => c.sftp((e) => resolve(e ?? undefined)));
    assert.ok(err instanceof Error);
  } finally {
    c.end();
  }
});

test("a key that is not authorized cannot log in, and the failure is counted", async () => {
  const stranger = await makeKeyPair(l0.dir, "stranger");
  const before = l0.endpoint.stats().authFailures;
  const r = await run("git", ["ls-remote", l0.url("tofu")], { env: l0.gitEnv(stranger) });
  assert.notEqual(r.code, 0);
  await assert.rejects(connectRaw(l0.port, stranger.privateKey), (e: Error & { level?: string }) => e.level === "client-authentication");
  assert.ok(l0.endpoint.stats().authFailures > before);
});

test("password auth is never offered", async () => {
  const r = await run("ssh", ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "PreferredAuthentications=password,keyboard-interactive",
    "-o", `UserKnownHostsFile=${l0.knownHosts}`, "-o", "StrictHostKeyChecking=yes", "-p", String(l0.port), "-v", "hsd@127.0.0.1", "true"], { env: cleanEnv() });
  assert.equal(r.code, 255);
  assert.match(r.stderr, /Authentications that can continue: publickey\r?\n/);
});

function forwardOut(c: import("ssh2").Client, host: string, port: number): Promise<import("ssh2").ClientChannel> {
  return new Promise((resolve, reject) => c.forwardOut("127.0.0.1", 0, host, port, (e, ch) => (e ? reject(e) : resolve(ch))));
}
function streamLocal(c: import("ssh2").Client, path: string): Promise<import("ssh2").ClientChannel> {
  return new Promise((resolve, reject) => c.openssh_forwardOutStreamLocal(path, (e, ch) => (e ? reject(e) : resolve(ch))));
}
function echo(ch: import("ssh2").ClientChannel, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no echo")), 10_000);
    ch.once("data", (d: Buffer) => { clearTimeout(t); resolve(d.toString()); ch.end(); });
    ch.write(msg);
  });
}

test("a controller reaches the API socket via direct-tcpip hsd.grpc:1 and via streamlocal (path ignored)", async () => {
  const c = await connectRaw(l0.port, l0.controller.privateKey);
  try {
    assert.equal(await echo(await forwardOut(c, "hsd.grpc", 1), "hi"), "api:hi");
    assert.equal(await echo(await streamLocal(c, "/var/run/docker.sock"), "yo"), "api:yo");
  } finally {
    c.end();
  }
});

test("a controller cannot forward to any other target", async () => {
  const c = await connectRaw(l0.port, l0.controller.privateKey);
  try {
    await assert.rejects(forwardOut(c, "127.0.0.1", l0.port));
    await assert.rejects(forwardOut(c, "hsd.grpc", 22));
  } finally {
    c.end();
  }
});

test("a controller cannot run upload-pack", async () => {
  const r = await run("git", ["ls-remote", l0.url("tofu")], { env: l0.gitEnv(l0.controller) });
  assert.notEqual(r.code, 0);
  const c = await connectRaw(l0.port, l0.controller.privateKey);
  try {
    const raw = await execRaw(c, "git-upload-pack 'tofu'");
    assert.equal(raw.code, 1);
    assert.equal(raw.stdout.length, 0);
  } finally {
    c.end();
  }
});

test("a reader cannot open a tunnel (direct-tcpip or streamlocal)", async () => {
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    await assert.rejects(forwardOut(c, "hsd.grpc", 1));
    await assert.rejects(streamLocal(c, levelPaths(l0.root).socket));
  } finally {
    c.end();
  }
});

test("remote port forwarding (tcpip-forward) is refused", async () => {
  const c = await connectRaw(l0.port, l0.controller.privateKey);
  try {
    await assert.rejects(new Promise<number>((resolve, reject) => c.forwardIn("127.0.0.1", 0, (e, p) => (e ? reject(e) : resolve(p)))));
  } finally {
    c.end();
  }
});

test("pty and env requests are refused", async () => {
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    const err = await new Promise<Error | undefined>((resolve) => c.shell({ term: "xterm" }, (e, ch) => { if (ch) ch.close(); resolve(e ?? undefined); }));
    assert.ok(err instanceof Error);
  } finally {
    c.end();
  }
});
