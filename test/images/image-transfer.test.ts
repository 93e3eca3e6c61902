// Image transfer parent -> child over the level's real SSH endpoint (ssh2
// server, ParentConnection client): verified, atomic, resumable, never a path,
// typed errors for bad bytes and bad config, and the endpoint's own queue.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, writeFile, stat, open } from "node:fs/promises";
import { join } from "node:path";
import { connectRaw, execRaw, type Level0 } from "../helpers/git-fixtures.js";
import { imageLevel0, type ImageLevel0 } from "../helpers/image-fixtures.js";
import { silentLogger } from "../../src/log/logger.js";
import { ParentConnection } from "../../src/ssh/parent-connection.js";
import { ImageDigests } from "../../src/images/image-digest.js";
import { fetchImage, type FetchImageOptions } from "../../src/images/fetch-image.js";
import type { ImageEntry } from "../../src/config/config.js";

const SIZE = 24 << 20;
let img: ImageLevel0;
let l0: Level0;
let srcDir: string;
let data: Buffer;
let sha: string;
let entries: Record<string, ImageEntry>;
let childN = 0;

before(async () => {
  img = await imageLevel0("hsd-img-src", SIZE, 1);
  ({ l0, srcDir, data, sha, entries } = img);
  await writeFile(join(srcDir, "small.img"), data.subarray(0, 1000));
  entries.small = { path: join(srcDir, "small.img"), sha256: "" };
});
after(() => img.close());

const newConn = () => new ParentConnection({
  parent: { host: "127.0.0.1", port: l0.port, hostKeyFingerprint: l0.endpoint.hostKeyFingerprint },
  privateKey: l0.reader.privateKey, connectTimeoutMs: 5_000, log: silentLogger(),
});

function child() {
  const dir = join(l0.dir, `child-${++childN}`);
  const conn = newConn();
  const digests = new ImageDigests(join(dir, "state", "digests.json"), silentLogger());
  const opts = (over: Partial<FetchImageOptions> = {}): FetchImageOptions => ({
    conn, name: "pve-9", dest: join(dir, "images", "pve-9.img"), expectedSha256: "", digests,
    commandTimeoutMs: 60_000, log: silentLogger(), now: () => Date.now(), ...over,
  });
  return { dir, conn, digests, opts, dest: join(dir, "images", "pve-9.img") };
}

const codeOf = (p: Promise<unknown>) => p.then(() => "resolved", (e: { code?: string }) => { if (process.env.DBG) console.error("ERR", e); return e.code; });

test("an image arrives whole, sha256-verified, with throttled progress; present with the right sha256 it never moves again", async () => {
  const c = child();
  try {
    const reports: { done: number; rateBps: number; etaS: number }[] = [];
    const r = await fetchImage(c.opts({ onProgress: (p) => reports.push(p), progressIntervalMs: 1_000_000 }));
    assert.deepEqual({ sha: r.sha256, size: r.size, bytes: r.bytes, reused: r.reused }, { sha, size: SIZE, bytes: SIZE, reused: false });
    assert.ok((await readFile(c.dest)).equals(data));
    assert.equal(existsSync(`${c.dest}.partial`), false);
    // Interval longer than the run: only the first and the final report go out.
    assert.equal(reports.length, 2);
    assert.equal(reports.at(-1)!.done, SIZE);
    assert.ok(reports.at(-1)!.rateBps > 0);
    // Known sha256 (from config): not even a connection's worth of bytes.
    assert.equal((await fetchImage(c.opts({ expectedSha256: sha }))).bytes, 0);
    // Unknown sha256: a probe at the file's end; the header's sha256 matches, nothing moves.
    const again = await fetchImage(c.opts());
    assert.deepEqual({ bytes: again.bytes, reused: again.reused }, { bytes: 0, reused: true });
  } finally {
    c.conn.close();
  }
});

test("a link cut mid-transfer keeps the partial; the re-run moves only the rest and the sha256 matches", async () => {
  const c = child();
  let cut = false;
  const first = await codeOf(fetchImage(c.opts({
    progressIntervalMs: 0,
    onProgress: (p) => { if (!cut && p.done >= SIZE / 2) { cut = true; c.conn.close(); } },
  })));
  assert.equal(first, "PeerGone");
  assert.equal(existsSync(c.dest), false);
  const partial = (await stat(`${c.dest}.partial`)).size;
  assert.ok(partial >= SIZE / 2 && partial < SIZE, `partial ${partial}`);
  const c2 = { ...c, conn: newConn() };
  try {
    const r = await fetchImage({ ...c.opts(), conn: c2.conn });
    assert.equal(r.resumedFrom, partial);
    assert.equal(r.bytes, SIZE - partial);
    assert.equal(r.sha256, sha);
    assert.ok((await readFile(c.dest)).equals(data));
    assert.equal(existsSync(`${c.dest}.partial`), false);
  } finally {
    c2.conn.close();
  }
});

test("a corrupted byte in the received part: ImageChecksumMismatch, no file under the final name, and the bad partial is gone", async () => {
  const c = child();
  let cut = false;
  await codeOf(fetchImage(c.opts({
    progressIntervalMs: 0,
    onProgress: (p) => { if (!cut && p.done >= SIZE / 4) { cut = true; c.conn.close(); } },
  })));
  const fh = await open(`${c.dest}.partial`, "r+");
  const one = Buffer.alloc(1);
  await fh.read(one, 0, 1, 1000);
  one[0] = one[0]! ^ 0xff;
  await fh.write(one, 0, 1, 1000);
  await fh.close();
  const c2conn = newConn();
  try {
    assert.equal(await codeOf(fetchImage({ ...c.opts(), conn: c2conn })), "ImageChecksumMismatch");
    assert.equal(existsSync(c.dest), false);
    assert.equal(existsSync(`${c.dest}.partial`), false);
    // The next run starts clean and succeeds.
    assert.equal((await fetchImage({ ...c.opts(), conn: c2conn })).sha256, sha);
  } finally {
    c2conn.close();
  }
});

test("a wrong sha256 in config, at level 0 or passed to the child: ImageChecksumMismatch and nothing under the final name", async () => {
  const c = child();
  try {
    assert.equal(await codeOf(fetchImage(c.opts({ expectedSha256: "b".repeat(64) }))), "ImageChecksumMismatch");
    assert.equal(existsSync(c.dest), false);
    entries["pve-9"] = { ...entries["pve-9"]!, sha256: "0".repeat(64) };
    try {
      assert.equal(await codeOf(fetchImage(c.opts())), "ImageChecksumMismatch");
    } finally {
      entries["pve-9"] = { ...entries["pve-9"]!, sha256: "" };
    }
    assert.equal(existsSync(c.dest), false);
  } finally {
    c.conn.close();
  }
});

test("no room for the rest of an image: DiskFull before a byte lands, naming the image; the next run with room moves it whole", async () => {
  const c = child();
  const asked: string[] = [];
  try {
    const err = await fetchImage(c.opts({ freeBytes: async (dir) => { asked.push(dir); return SIZE - 1; } })).then(() => undefined, (e: { code?: string; details?: Record<string, unknown> }) => e);
    assert.equal(err?.code, "DiskFull");
    assert.equal(err.details?.image, "pve-9");
    assert.deepEqual(asked, [join(c.dir, "images")]);
    assert.equal(existsSync(c.dest), false);
    assert.equal(existsSync(`${c.dest}.partial`), false);
    const r = await fetchImage(c.opts({ freeBytes: async () => SIZE }));
    assert.equal(r.sha256, sha);
  } finally {
    c.conn.close();
  }
});

test("readers get configured names only: unknown names and paths are ImageNotFound; a controller key runs nothing", async () => {
  const c = child();
  try {
    assert.equal(await codeOf(fetchImage(c.opts({ name: "debian-13", dest: join(c.dir, "images", "debian-13.img") }))), "ImageNotFound");
  } finally {
    c.conn.close();
  }
  const raw = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    for (const cmd of ["hsd-image ../pve-9 0", `hsd-image ${entries["pve-9"]!.path} 0`, "hsd-image pve-9 -1", "hsd-image pve-9 0 x"]) {
      const r = await execRaw(raw, cmd);
      assert.equal(r.code, 1, cmd);
      assert.equal(r.stdout.length, 0, cmd);
      assert.match(r.stderr.toString(), /\[ImageNotFound\]\n$/, cmd);
    }
  } finally {
    raw.end();
  }
  const ctl = await connectRaw(l0.port, l0.controller.privateKey);
  try {
    const r = await execRaw(ctl, "hsd-image pve-9 0");
    assert.equal(r.code, 1);
    assert.equal(r.stdout.length, 0);
  } finally {
    ctl.end();
  }
});

test("transfers past the cap wait in the queue instead of being refused", async () => {
  // The first transfer holds the only slot (max 1): a reader that never reads stalls it on the channel's window.
  const raw = await connectRaw(l0.port, l0.reader.privateKey);
  const b = child();
  try {
    const held = await new Promise<import("ssh2").ClientChannel>((resolve, reject) => {
      raw.exec("hsd-image pve-9 0", (err, ch) => (err ? reject(err) : resolve(ch)));
    });
    await until(() => l0.endpoint.stats().activeImageTransfers === 1);
    const second = fetchImage(b.opts({ name: "small", dest: join(b.dir, "images", "small.img") }));
    await until(() => l0.endpoint.stats().queuedImageTransfers === 1);
    // The slot frees when the first reader goes away; the queued one then runs.
    held.close();
    await second;
    assert.equal(l0.endpoint.stats().activeImageTransfers, 0);
    assert.ok((await readFile(join(b.dir, "images", "small.img"))).equals(data.subarray(0, 1000)));
  } finally {
    raw.end();
    b.conn.close();
  }
});

async function until(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
