// An image that config fully describes (sha256 and size, passed down by the
// parent, and the parent's host key, pinned by its fingerprint) moves through
// the real OpenSSH client at once, against a real hsd endpoint: no ssh2
// session and no header before the bytes. It resumes from a partial of the
// same image, starts over from one of another, and bad facts end in typed
// errors with nothing under the final name.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, readFile, writeFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { makeKeyPair, type Level0 } from "../helpers/git-fixtures.js";
import { imageLevel0, type ImageLevel0 } from "../helpers/image-fixtures.js";
import { createLogger, silentLogger } from "../../src/log/logger.js";
import { ParentConnection } from "../../src/ssh/parent-connection.js";
import { ImageDigests } from "../../src/images/image-digest.js";
import { fetchImage, type FetchImageOptions, type ImageProgress } from "../../src/images/fetch-image.js";
import { findOpenSsh, parentOpenSshRoute } from "../../src/images/openssh-transfer.js";

const SIZE = 6 << 20;
const SSH = findOpenSsh();
let img: ImageLevel0;
let l0: Level0;
let recordingSsh: string;
let n = 0;

before(async () => {
  assert.ok(SSH, "the OpenSSH client (ssh) is needed: apt-get install openssh-client");
  img = await imageLevel0("hsd-known-src", SIZE, 2);
  l0 = img.l0;
  recordingSsh = join(img.srcDir, "recording-ssh");
  await writeFile(recordingSsh, `#!/bin/sh\nprintf '%s\\n' "$*" >> ${join(img.srcDir, "ssh-calls")}\nexec ${SSH} "$@"\n`);
  await chmod(recordingSsh, 0o755);
});
after(() => img.close());

const sshCalls = () => readFile(join(img.srcDir, "ssh-calls"), "utf8").then((s) => s.trim().split("\n"), () => [] as string[]);
const codeOf = (p: Promise<unknown>) => p.then(() => "resolved", (e: { code?: string }) => e.code);

/** A child whose config knows the image and the parent's host key; its ssh2 connection points at nothing that answers. */
function child(hostKey = l0.endpoint.hostKey) {
  const dir = join(l0.dir, `known-child-${++n}`);
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ level: "debug", destination: new Writable({ write(c, _e, cb) { lines.push(JSON.parse(String(c))); cb(); } }) });
  const parent = { host: "127.0.0.1", port: l0.port, hostKeyFingerprint: l0.endpoint.hostKeyFingerprint, hostKey };
  // Used for the header or the host key, it would fail the fetch (port 1 refuses): the proof none was asked.
  const conn = new ParentConnection({ parent: { ...parent, port: 1 }, userKeyPath: l0.reader.privatePath, connectTimeoutMs: 2_000, log: silentLogger() });
  const route = parentOpenSshRoute({ sshPath: recordingSsh, conn, parent, userKeyPath: l0.reader.privatePath, connectTimeoutMs: 5_000 })!;
  const dest = join(dir, "images", "pve-9.img");
  const opts = (over: Partial<FetchImageOptions> = {}): FetchImageOptions => ({
    conn, name: "pve-9", dest, expectedSha256: img.sha, expectedSize: SIZE, openssh: route,
    digests: new ImageDigests(join(dir, "state", "digests.json"), silentLogger()),
    commandTimeoutMs: 60_000, log, now: () => Date.now(), ...over,
  });
  return { dir, conn, dest, opts, lines };
}

test("sha256, size and host key from config: ssh fetches the raw bytes at once, no ssh2 session, verified and in place", async () => {
  const c = child();
  try {
    const before = (await sshCalls()).length;
    const reports: ImageProgress[] = [];
    const r = await fetchImage(c.opts({ onProgress: (p) => reports.push(p), progressIntervalMs: 1_000_000 }));
    assert.deepEqual({ sha: r.sha256, size: r.size, bytes: r.bytes, reused: r.reused, from: r.resumedFrom }, { sha: img.sha, size: SIZE, bytes: SIZE, reused: false, from: 0 });
    assert.ok((await readFile(c.dest)).equals(img.data));
    assert.equal(existsSync(`${c.dest}.partial`), false);
    assert.equal(existsSync(`${c.dest}.partial.sha256`), false);
    const calls = (await sshCalls()).slice(before);
    assert.equal(calls.length, 1);
    assert.match(calls[0]!, new RegExp(`hsd-image --raw pve-9 0 ${img.sha}$`));
    assert.deepEqual(c.lines.filter((l) => l.msg === "image transfer route").map((l) => [l.via, l.header]), [["openssh", "from config"]]);
    assert.deepEqual(reports.at(-1), { image: "pve-9", done: SIZE, total: SIZE, rateBps: reports.at(-1)!.rateBps, etaS: 0 });
  } finally {
    c.conn.close();
  }
});

test("a partial of the same image resumes from its end; one of another image starts over", async () => {
  const c = child();
  try {
    await mkdir(dirname(c.dest), { recursive: true });
    const cut = 2 << 20;
    await writeFile(`${c.dest}.partial`, img.data.subarray(0, cut));
    await writeFile(`${c.dest}.partial.sha256`, `${img.sha}\n`);
    const before = (await sshCalls()).length;
    const r = await fetchImage(c.opts());
    assert.deepEqual({ bytes: r.bytes, from: r.resumedFrom }, { bytes: SIZE - cut, from: cut });
    assert.match((await sshCalls())[before]!, new RegExp(`hsd-image --raw pve-9 ${cut} ${img.sha}$`));
    assert.ok((await readFile(c.dest)).equals(img.data));

    const d = child();
    await mkdir(dirname(d.dest), { recursive: true });
    await writeFile(`${d.dest}.partial`, Buffer.alloc(cut, 7));
    await writeFile(`${d.dest}.partial.sha256`, `${"0".repeat(64)}\n`);
    const again = await fetchImage(d.opts());
    assert.deepEqual({ bytes: again.bytes, from: again.resumedFrom }, { bytes: SIZE, from: 0 });
    assert.ok((await readFile(d.dest)).equals(img.data));
    d.conn.close();
  } finally {
    c.conn.close();
  }
});

test("facts that are wrong: typed errors, and nothing under the final name", async () => {
  // The parent serves another sha256 than config says: it refuses the raw bytes.
  const a = child();
  assert.equal(await codeOf(fetchImage(a.opts({ expectedSha256: "ab".repeat(32) }))), "ImageChecksumMismatch");
  assert.equal(existsSync(a.dest), false);
  a.conn.close();
  // A size config got wrong: the bytes that came are not the image config described.
  const b = child();
  assert.equal(await codeOf(fetchImage(b.opts({ expectedSize: SIZE - 1 }))), "ImageTransfer");
  assert.equal(existsSync(b.dest), false);
  b.conn.close();
  // A host key that is not the parent's: ssh refuses the host before a byte lands.
  const other = await makeKeyPair(l0.dir, "known-other-host");
  const c = child(other.publicKey.split(" ").slice(0, 2).join(" "));
  assert.equal(await codeOf(fetchImage(c.opts())), "HostKeyMismatch");
  assert.equal(existsSync(c.dest), false);
  assert.equal((await readFile(`${c.dest}.partial`).catch(() => Buffer.alloc(0))).length, 0);
  c.conn.close();
});

test("without the size (or the host key) from config, the header route is taken as before", async () => {
  const c = child();
  try {
    // The ssh2 connection must be asked for then: port 1 refuses it, so the fetch fails typed.
    assert.equal(await codeOf(fetchImage(c.opts({ expectedSize: undefined }))), "PeerGone");
    assert.deepEqual(c.lines.filter((l) => l.msg === "image transfer route").map((l) => l.header), []);
  } finally {
    c.conn.close();
  }
});
