// Image bytes through the real OpenSSH client into the partial file, against a
// real hsd endpoint: the host key pinned from the ssh2 connection (never
// trusted on first use), resume from the partial, cancel and the command
// timeout kill ssh and keep the partial, typed errors from ssh's exit, and the
// ssh2 path when no ssh or no verified host key is at hand.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { closeSync, constants as fsConstants, existsSync, openSync, readFileSync } from "node:fs";
import { spawn, spawnSync } from "node:child_process";
import { readFile, writeFile, stat, mkdir, chmod } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { makeKeyPair, connectRaw, execRaw, type Level0 } from "../helpers/git-fixtures.js";
import { imageLevel0, type ImageLevel0 } from "../helpers/image-fixtures.js";
import { createLogger, silentLogger } from "../../src/log/logger.js";
import { ParentConnection } from "../../src/ssh/parent-connection.js";
import { ImageDigests } from "../../src/images/image-digest.js";
import { fetchImage, type FetchImageOptions } from "../../src/images/fetch-image.js";
import { findOpenSsh, openSshArgs, parentOpenSshRoute, receiveWithOpenSsh, type OpenSshRoute } from "../../src/images/openssh-transfer.js";

const SIZE = 24 << 20;
const STALL_AT = 1 << 20;
const SSH = findOpenSsh();
let img: ImageLevel0;
let l0: Level0;
let srcDir: string;
let data: Buffer;
let sha: string;
let recordingSsh: string;
let stallingSsh: string;
let childN = 0;

before(async () => {
  assert.ok(SSH, "the OpenSSH client (ssh) is needed: apt-get install openssh-client");
  img = await imageLevel0("hsd-ossh-src", SIZE, 2);
  ({ l0, srcDir, data, sha } = img);
  // The real ssh, with each command line it was given recorded: proof the bytes went through it.
  recordingSsh = join(srcDir, "recording-ssh");
  await writeFile(recordingSsh, `#!/bin/sh\nprintf '%s\\n' "$*" >> ${join(srcDir, "ssh-calls")}\nexec ${SSH} "$@"\n`);
  // The real ssh whose output stops after 1 MiB while the process lives on: a stalled link.
  stallingSsh = join(srcDir, "stalling-ssh");
  await writeFile(stallingSsh, `#!/bin/sh\n${SSH} "$@" | head -c ${STALL_AT}\nexec sleep 3600\n`);
  await chmod(recordingSsh, 0o755);
  await chmod(stallingSsh, 0o755);
});
after(() => img.close());

function child(sshPath = recordingSsh) {
  const dir = join(l0.dir, `ossh-child-${++childN}`);
  const parent = { host: "127.0.0.1", port: l0.port, hostKeyFingerprint: l0.endpoint.hostKeyFingerprint };
  const conn = new ParentConnection({ parent, userKeyPath: l0.reader.privatePath, connectTimeoutMs: 5_000, log: silentLogger() });
  const route = parentOpenSshRoute({ sshPath, conn, parent, userKeyPath: l0.reader.privatePath, connectTimeoutMs: 5_000 })!;
  const digests = new ImageDigests(join(dir, "state", "digests.json"), silentLogger());
  const dest = join(dir, "images", "pve-9.img");
  const opts = (over: Partial<FetchImageOptions> = {}): FetchImageOptions => ({
    conn, name: "pve-9", dest, expectedSha256: "", digests, openssh: route,
    commandTimeoutMs: 60_000, log: silentLogger(), now: () => Date.now(), ...over,
  });
  return { dir, conn, route, digests, opts, dest };
}

/** A logger whose lines the test can read. */
function capturingLogger(): { log: ReturnType<typeof silentLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({ write(chunk, _e, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  return { log: createLogger({ level: "debug", destination }), lines };
}

const codeOf = (p: Promise<unknown>) => p.then(() => "resolved", (e: { code?: string }) => e.code);
const sshCalls = () => readFile(join(srcDir, "ssh-calls"), "utf8").then((s) => s.trim().split("\n"), () => [] as string[]);

test("the bytes move through ssh into the partial: whole, sha256-verified, progress with bytes/rate/ETA, the route logged", async () => {
  const c = child();
  const { log, lines } = capturingLogger();
  try {
    const before = (await sshCalls()).length;
    const reports: { done: number; total: number; rateBps: number }[] = [];
    const r = await fetchImage(c.opts({ log, onProgress: (p) => reports.push(p), progressIntervalMs: 1_000_000 }));
    assert.deepEqual({ sha: r.sha256, size: r.size, bytes: r.bytes, reused: r.reused }, { sha, size: SIZE, bytes: SIZE, reused: false });
    assert.ok((await readFile(c.dest)).equals(data));
    assert.equal(existsSync(`${c.dest}.partial`), false);
    assert.equal(existsSync(`${c.dest}.partial.known_hosts`), false, "ssh's pinned known_hosts is removed with the transfer");
    const calls = (await sshCalls()).slice(before);
    assert.equal(calls.length, 1);
    assert.match(calls[0]!, new RegExp(`hsd-image --raw pve-9 0 ${sha}$`));
    assert.deepEqual(lines.filter((l) => l.msg === "image transfer route").map((l) => l.via), ["openssh"]);
    assert.equal(reports.at(-1)!.done, SIZE);
    assert.ok(reports.at(-1)!.rateBps > 0);
    // Present with the right sha256: ssh is not even started.
    assert.equal((await fetchImage(c.opts({ expectedSha256: sha }))).bytes, 0);
    assert.equal((await fetchImage(c.opts())).reused, true);
    assert.equal((await sshCalls()).length, before + 1);
  } finally {
    c.conn.close();
  }
});

test("ssh runs with no user config, no agent, the level's key only, the pinned host key only, and its own connect timeout", () => {
  const route: OpenSshRoute = { sshPath: "ssh", host: "10.0.0.1", port: 2222, userKeyPath: "/k/user", connectTimeoutMs: 7_500, hostKey: async () => undefined };
  const args = openSshArgs(route, "/tmp/kh", "hsd-image --raw x 0 " + "a".repeat(64));
  const opt = (name: string) => args.filter((a, i) => args[i - 1] === "-o" && a.startsWith(`${name}=`)).map((a) => a.slice(name.length + 1));
  assert.deepEqual(args.slice(0, 2), ["-F", "/dev/null"]);
  assert.deepEqual(opt("StrictHostKeyChecking"), ["yes"]);
  assert.deepEqual(opt("UserKnownHostsFile"), ["/tmp/kh"]);
  assert.deepEqual(opt("GlobalKnownHostsFile"), ["/dev/null"]);
  assert.deepEqual(opt("BatchMode"), ["yes"]);
  assert.deepEqual(opt("IdentitiesOnly"), ["yes"]);
  assert.deepEqual(opt("ConnectTimeout"), ["8"]);
  // AES-GCM before chacha20: OpenSSL's AES-NI GCM on hsd's ssh2 side.
  assert.match(opt("Ciphers")[0]!, /^aes128-gcm@openssh\.com,/);
  assert.equal(args[args.indexOf("-i") + 1], "/k/user");
  assert.deepEqual(args.slice(-3), ["--", "10.0.0.1", "hsd-image --raw x 0 " + "a".repeat(64)]);
});

test("a host key other than the one ssh2 verified: HostKeyMismatch, and not a byte lands", async () => {
  const c = child();
  try {
    const other = await makeKeyPair(c.dir.replace(/ossh-child-\d+$/, ""), `other-host-${childN}`);
    const route = { ...c.route, hostKey: async () => other.publicKey.split(" ").slice(0, 2).join(" ") };
    assert.equal(await codeOf(fetchImage(c.opts({ openssh: route }))), "HostKeyMismatch");
    assert.equal((await stat(`${c.dest}.partial`).catch(() => undefined))?.size ?? 0, 0);
    assert.equal(existsSync(c.dest), false);
  } finally {
    c.conn.close();
  }
});

test("cancel kills ssh and keeps the partial; the command timeout does the same; the re-run resumes from the partial's size", async () => {
  const c = child(stallingSsh);
  try {
    const ac = new AbortController();
    const cancelled = fetchImage(c.opts({
      signal: ac.signal, progressIntervalMs: 0, onProgress: (p) => { if (p.done >= STALL_AT) ac.abort(); },
    }));
    assert.equal(await codeOf(cancelled), "Cancelled");
    assert.equal((await stat(`${c.dest}.partial`)).size, STALL_AT);
    // Stalled again from 1 MiB on: the transfer's own budget ends it.
    assert.equal(await codeOf(fetchImage(c.opts({ commandTimeoutMs: 1_500 }))), "CommandTimeout");
    assert.equal((await stat(`${c.dest}.partial`)).size, 2 * STALL_AT);
    const again = await fetchImage(c.opts({ openssh: { ...c.route, sshPath: recordingSsh } }));
    assert.deepEqual({ resumedFrom: again.resumedFrom, bytes: again.bytes, sha: again.sha256 }, { resumedFrom: 2 * STALL_AT, bytes: SIZE - 2 * STALL_AT, sha });
    assert.ok((await readFile(c.dest)).equals(data));
    assert.match((await sshCalls()).at(-1)!, new RegExp(`hsd-image --raw pve-9 ${2 * STALL_AT} ${sha}$`));
  } finally {
    c.conn.close();
  }
});

test("ssh's failures are typed: an unknown image, a changed image, an unreachable parent", async () => {
  const c = child();
  try {
    const hostKey = (await c.route.hostKey())!;
    await mkdir(c.dir, { recursive: true });
    const base = { route: c.route, hostKey, offset: 0, partial: join(c.dir, "x.partial"), commandTimeoutMs: 30_000, log: silentLogger(), onGrowth: () => {}, pollMs: 100 };
    assert.equal(await codeOf(receiveWithOpenSsh({ ...base, name: "nope", sha256: sha })), "ImageNotFound");
    assert.equal(await codeOf(receiveWithOpenSsh({ ...base, name: "pve-9", sha256: "0".repeat(64) })), "ImageChecksumMismatch");
    assert.equal((await stat(base.partial)).size, 0);
    const closed = await (await import("node:net")).createServer().listen(0, "127.0.0.1");
    await new Promise((r) => closed.once("listening", r));
    const port = (closed.address() as { port: number }).port;
    await new Promise((r) => closed.close(r));
    assert.equal(await codeOf(receiveWithOpenSsh({ ...base, route: { ...c.route, port }, name: "pve-9", sha256: sha })), "PeerGone");
  } finally {
    c.conn.close();
  }
});

test("without ssh, or without a verified parent host key, the bytes move over ssh2 as before and the route says so", async () => {
  assert.equal(findOpenSsh("/nonexistent-dir"), undefined);
  const c = child();
  const { log, lines } = capturingLogger();
  try {
    const parent = { host: "127.0.0.1", port: l0.port, hostKeyFingerprint: l0.endpoint.hostKeyFingerprint };
    assert.equal(parentOpenSshRoute({ sshPath: undefined, conn: c.conn, parent, userKeyPath: l0.reader.privatePath, connectTimeoutMs: 5_000 }), undefined);
    const before = (await sshCalls()).length;
    const r = await fetchImage(c.opts({ log, openssh: { ...c.route, hostKey: async () => undefined } }));
    assert.deepEqual({ sha: r.sha256, bytes: r.bytes }, { sha, bytes: SIZE });
    assert.equal((await sshCalls()).length, before);
    assert.deepEqual(lines.filter((l) => l.msg === "image transfer route").map((l) => l.via), ["ssh2"]);
  } finally {
    c.conn.close();
  }
});

test("the endpoint serves the header alone, the raw bytes alone from an offset, and refuses raw bytes of another sha256", async () => {
  const raw = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    const head = await execRaw(raw, "hsd-image --head pve-9");
    assert.equal(head.code, 0);
    assert.equal(head.stdout.toString(), `HSDIMG1 ${SIZE} ${sha}\n`);
    const tail = await execRaw(raw, `hsd-image --raw pve-9 ${SIZE - 1000} ${sha}`);
    assert.equal(tail.code, 0);
    assert.ok(tail.stdout.equals(data.subarray(SIZE - 1000)));
    const other = await execRaw(raw, `hsd-image --raw pve-9 0 ${"0".repeat(64)}`);
    assert.equal(other.code, 1);
    assert.equal(other.stdout.length, 0);
    assert.match(other.stderr.toString(), /\[ImageChecksumMismatch\]\n$/);
  } finally {
    raw.end();
  }
});

test("ssh does not outlive a daemon killed mid-transfer (setpriv --pdeathsig): no orphan appends to the partial", async () => {
  const c = child();
  const dir = join(c.dir, "orphan");
  await mkdir(dir, { recursive: true });
  try {
    const hostKey = (await c.route.hostKey())!;
    // ssh's stdout is a FIFO nobody reads: it blocks after the pipe's buffer, mid-transfer, until it is killed.
    const fifo = join(dir, "x.partial");
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
    const reader = openSync(fifo, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    const pidFile = join(dir, "ssh.pid");
    const pidSsh = join(dir, "pid-ssh");
    await writeFile(pidSsh, `#!/bin/sh\necho $$ > ${pidFile}\nexec ${SSH} "$@"\n`, { mode: 0o755 });
    const { sshPath: _s, hostKey: _h, ...route } = c.route;
    const proc = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "fixtures", "receive-child.ts"), JSON.stringify({
      route: { ...route, sshPath: pidSsh }, hostKey, name: "pve-9", sha256: sha, partial: fifo,
    })], { stdio: "ignore" });
    let sshPid = 0;
    try {
      sshPid = Number(await waitFor(() => readFile(pidFile, "utf8").then((t) => t.trim() || undefined, () => undefined), 30_000));
      await waitFor(async () => (alive(sshPid) ? true : undefined), 30_000);
      // ssh's pinned known_hosts lives beside the partial, so a killed daemon leaves no stray temp dir.
      assert.equal(readFileSync(`${fifo}.known_hosts`, "utf8"), `hsd-parent ${hostKey}\n`);
      proc.kill("SIGKILL");
      await waitFor(async () => (alive(sshPid) ? undefined : true), 10_000);
    } finally {
      proc.kill("SIGKILL");
      if (sshPid && alive(sshPid)) process.kill(sshPid, "SIGKILL");
      closeSync(reader);
    }
  } finally {
    c.conn.close();
  }
});

/** Live and not a zombie. */
function alive(pid: number): boolean {
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8")); } catch { return false; }
}

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("on the ssh route too: DiskFull before ssh starts, and a damaged partial ends in ImageChecksumMismatch with nothing under the final name", async () => {
  const c = child();
  try {
    const before = (await sshCalls()).length;
    assert.equal(await codeOf(fetchImage(c.opts({ freeBytes: async () => 1000 }))), "DiskFull");
    assert.equal((await sshCalls()).length, before);
    assert.equal((await stat(`${c.dest}.partial`).catch(() => undefined))?.size ?? 0, 0);
    // A partial whose first MiB was damaged on disk: ssh appends the rest, the sha256 catches it.
    const bad = Buffer.from(data.subarray(0, STALL_AT));
    bad[12345] = bad[12345]! ^ 0xff;
    await mkdir(join(c.dir, "images"), { recursive: true });
    await writeFile(`${c.dest}.partial`, bad);
    await writeFile(`${c.dest}.partial.sha256`, `${sha}\n`);
    assert.equal(await codeOf(fetchImage(c.opts())), "ImageChecksumMismatch");
    assert.equal((await sshCalls()).length, before + 1);
    assert.equal(existsSync(c.dest), false);
    assert.equal(existsSync(`${c.dest}.partial`), false);
    // The next run starts clean and lands the image.
    assert.equal((await fetchImage(c.opts())).sha256, sha);
  } finally {
    c.conn.close();
  }
});
