// A level below 0 fetches one image from its parent (hsd-image over the
// level's SSH connection, through ChannelStream): resumed from the bytes a cut
// transfer left in <name>.img.partial, sha256-verified, then renamed into
// place atomically. An image already here with the right sha256 never moves.
// With an OpenSSH client (openssh), the header still comes over ssh2 and the
// bytes through ssh straight into the partial file (openssh-transfer.ts); when
// config already says the sha256, the size and the parent's host key, ssh
// starts at once, with no header asked for.
// Imported by: src/images, src/level.

import { mkdir, open, readFile, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Logger } from "../log/logger.js";
import { DiskFullError, HsError, ImageChecksumMismatchError, ImageTransferError, PeerGoneError } from "../domain/errors.js";
import { ChannelStream, type ChannelOpener } from "../ssh/channel-stream.js";
import { imageCommand, imageHeadCommand } from "../ssh/exec-command.js";
import { remoteRefusal } from "./image-refusal.js";
import { receiveWithOpenSsh, type OpenSshRoute } from "./openssh-transfer.js";
import { IMAGE_HEADER } from "./image-server.js";
import type { ImageDigests } from "./image-digest.js";
import { fileHasher, type FileHasher } from "./file-hasher.js";
import { VALUE_HINTS } from "../domain/hints.js";

export interface ImageProgress {
  readonly image: string;
  /** Bytes of the image this level has (including what an earlier, cut transfer left). */
  readonly done: number;
  readonly total: number;
  /** Bytes per second moved by this transfer. */
  readonly rateBps: number;
  /** Seconds to go at that rate (0 when unknown or done). */
  readonly etaS: number;
}

export interface FetchImageOptions {
  readonly conn: ChannelOpener;
  readonly name: string;
  /** Final file (<image_dir>/<name>.img). */
  readonly dest: string;
  /** From config (the parent passed it down); "" = take the parent's word, still verified against the bytes. */
  readonly expectedSha256: string;
  /**
   * Bytes, from config beside expectedSha256 (absent: unknown). With both, and the
   * parent's host key known from config, the bytes move at once: no ssh2 connect
   * and no header round trip before them (the parent still refuses another sha256).
   */
  readonly expectedSize?: number;
  readonly digests: ImageDigests;
  /** Budget for one transfer, from open to close (never the connect timeout). */
  readonly commandTimeoutMs: number;
  readonly log: Logger;
  readonly now: () => number;
  readonly signal?: AbortSignal;
  /** Called at most every progressIntervalMs, and once at the end. */
  readonly onProgress?: (p: ImageProgress) => void;
  readonly progressIntervalMs?: number;
  /** Free bytes for unprivileged writes on the filesystem holding a directory (default: statfs). */
  readonly freeBytes?: (dir: string) => Promise<number>;
  /** Moves the bytes with the OpenSSH client (once the parent's host key is verified); absent: over conn. */
  readonly openssh?: OpenSshRoute;
}

export interface FetchImageResult {
  readonly sha256: string;
  readonly size: number;
  /** Bytes moved over the link by this call. */
  readonly bytes: number;
  /** Already here with the right sha256: nothing moved. */
  readonly reused: boolean;
  /** Where this call started (the partial's length); 0 for a fresh transfer. */
  readonly resumedFrom: number;
}

const WRITE_BATCH = 1 << 20;
const MAX_HEADER = 200;

const exists = (p: string) => stat(p).then((s) => s, () => undefined);

export async function fetchImage(o: FetchImageOptions): Promise<FetchImageResult> {
  const started = o.now();
  const partial = `${o.dest}.partial`;
  await mkdir(dirname(o.dest), { recursive: true });
  const local = async () => ((await exists(o.dest)) ? o.digests.digest(o.dest) : undefined);
  const have = await local();
  if (have && o.expectedSha256 && have.sha256 === o.expectedSha256) {
    return { sha256: have.sha256, size: have.size, bytes: 0, reused: true, resumedFrom: 0 };
  }
  if (o.openssh?.pinnedHostKey && o.expectedSha256 && o.expectedSize) {
    return fetchKnown(o, o.openssh, o.openssh.pinnedHostKey, { sha256: o.expectedSha256, size: o.expectedSize }, started);
  }
  // The host key ssh must pin is the one ssh2 verified: connect first, then choose the route.
  const hostKey = o.openssh ? await o.openssh.hostKey(o.signal) : undefined;
  const route = hostKey ? o.openssh : undefined;
  o.log.info({ image: o.name, via: route ? "openssh" : "ssh2", ...(o.openssh && !hostKey ? { why: "parent host key unknown" } : {}) }, "image transfer route");
  // A few rounds at most: a probe of the file we have, and a restart when the partial belongs to another image.
  for (let round = 0; round < 3; round++) {
    const partialSize = (await exists(partial))?.size ?? 0;
    const probe = have !== undefined && !o.expectedSha256 && partialSize === 0 && round === 0;
    const offset = probe ? have.size : partialSize;
    const s = await ChannelStream.exec(o.conn, route ? imageHeadCommand(o.name) : imageCommand(o.name, offset), {
      commandTimeoutMs: o.commandTimeoutMs, label: `image ${o.name}`, details: { image: o.name }, signal: o.signal,
    });
    try {
      const head = await readHeader(s, o.name);
      if (o.expectedSha256 && head.sha256 !== o.expectedSha256) {
        throw new ImageChecksumMismatchError(`the parent serves image ${o.name} with another sha256 than this level was told`, {
          details: { image: o.name, expected: o.expectedSha256, actual: head.sha256 },
        });
      }
      if (have && have.sha256 === head.sha256) {
        await s.close();
        return { sha256: have.sha256, size: have.size, bytes: 0, reused: true, resumedFrom: 0 };
      }
      if (probe) { await s.close(); continue; }
      if (!(await partialIsOf(o, partialSize, head))) {
        await s.close();
        continue;
      }
      return await land(o, head, partialSize, async (hasher, ro) => {
        if (!route) return receive(s, partial, hasher, ro);
        // The header-only command has ended; the bytes come through ssh.
        await s.closed();
        if (s.error) throw s.error;
        if (s.exitCode !== 0) throw refusal(s, o.name);
        // One budget for the transfer: what the header step used is not given again to ssh.
        return receiveBySsh(route, hostKey!, partial, hasher, head.sha256, {
          ...ro, commandTimeoutMs: Math.max(1, o.commandTimeoutMs - (o.now() - started)),
        });
      });
    } catch (err) {
      if (!s.closedNow) s.fail(err instanceof HsError ? err : new ImageTransferError(`image ${o.name}: ${(err as Error).message}`, { cause: err }));
      throw err;
    }
  }
  throw new ImageTransferError(`image ${o.name} kept changing while it was fetched`, { details: { image: o.name } });
}

type Head = { readonly size: number; readonly sha256: string };

/**
 * Whether the partial file (partialSize bytes; 0: none) can be resumed for this
 * image: its sidecar names the same sha256 and it is no longer than the image.
 * One that cannot is removed (logged), and the transfer starts over.
 */
async function partialIsOf(o: FetchImageOptions, partialSize: number, head: Head): Promise<boolean> {
  if (partialSize === 0) return true;
  const partialSha = (await readFile(`${o.dest}.partial.sha256`, "utf8").catch(() => "")).trim();
  if (partialSha === head.sha256 && partialSize <= head.size) return true;
  o.log.info({ image: o.name, partialSize }, "partial image belongs to another version; starting over");
  await rm(`${o.dest}.partial`, { force: true });
  return false;
}
type Receive = (hasher: FileHasher, ro: FetchImageOptions & { total: number; start: number }) => Promise<number>;

/**
 * The image as config says it is (sha256, size, the parent's host key): ssh
 * asks for the raw bytes from the partial's end at once, pinned to that
 * sha256. A partial of another sha256, or longer than the image, starts over.
 */
async function fetchKnown(o: FetchImageOptions, route: OpenSshRoute, hostKey: string, head: Head, started: number): Promise<FetchImageResult> {
  const partial = `${o.dest}.partial`;
  o.log.info({ image: o.name, via: "openssh", header: "from config" }, "image transfer route");
  const found = (await exists(partial))?.size ?? 0;
  const partialSize = (await partialIsOf(o, found, head)) ? found : 0;
  return land(o, head, partialSize, (hasher, ro) => receiveBySsh(route, hostKey, partial, hasher, head.sha256, {
    ...ro, commandTimeoutMs: Math.max(1, o.commandTimeoutMs - (o.now() - started)),
  }));
}

/**
 * The rest of an image after `partialSize` bytes, moved by `move` into the
 * partial file (checked for room first), hashed as it lands, verified, then
 * renamed into place and remembered. The bytes a cut left stay for a resume;
 * bytes that hash wrong do not.
 */
async function land(o: FetchImageOptions, head: Head, partialSize: number, move: Receive): Promise<FetchImageResult> {
  const partial = `${o.dest}.partial`;
  const sidecar = `${o.dest}.partial.sha256`;
  // This level's preflight for the image: room for the rest of it, before a byte lands.
  const free = await (o.freeBytes ?? freeBytesAt)(dirname(o.dest));
  if (free < head.size - partialSize) {
    throw new DiskFullError(`no room for image ${o.name}: ${head.size - partialSize} more bytes needed, ${free} free in ${dirname(o.dest)}`, {
      details: { image: o.name, needBytes: head.size - partialSize, freeBytes: free, dir: dirname(o.dest), hint: VALUE_HINTS.imageRoom(dirname(o.dest)) },
    });
  }
  if (partialSize === 0) await writeFile(sidecar, `${head.sha256}\n`, { mode: 0o600 });
  // The partial's bytes and the new ones are hashed from disk as they land.
  const hasher = fileHasher(partial, head.size);
  let moved: number;
  try {
    hasher.advance(partialSize);
    moved = await move(hasher, { ...o, total: head.size, start: partialSize });
  } catch (err) {
    hasher.close();
    throw err;
  }
  const got = partialSize + moved;
  if (got !== head.size) {
    hasher.close();
    throw new ImageTransferError(`image ${o.name} ended after ${got} of ${head.size} bytes`, {
      details: { image: o.name, bytes: got, size: head.size },
    });
  }
  const sha256 = await hasher.digest(got);
  if (sha256 !== head.sha256) {
    // Bad bytes cannot be resumed from: the next run starts clean.
    await rm(partial, { force: true });
    await rm(sidecar, { force: true });
    throw new ImageChecksumMismatchError(`image ${o.name} does not hash to its sha256 (damaged in transit or on disk)`, {
      details: { image: o.name, expected: head.sha256, actual: sha256 },
    });
  }
  await rename(partial, o.dest);
  // The rename made durable, and the digest recorded (its own atomic write), side by side.
  await Promise.all([rm(sidecar, { force: true }).then(() => syncDir(dirname(o.dest))), o.digests.remember(o.dest, sha256)]);
  o.log.info({ image: o.name, size: head.size, bytes: moved, resumedFrom: partialSize }, "image received");
  return { sha256, size: head.size, bytes: moved, reused: false, resumedFrom: partialSize };
}

async function freeBytesAt(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** Reads `HSDIMG1 <size> <sha256>\n`; a refusal (exit status, [Code] on stderr) becomes its typed error. */
async function readHeader(s: ChannelStream, name: string): Promise<{ size: number; sha256: string }> {
  let buf = Buffer.alloc(0);
  for (;;) {
    const nl = buf.indexOf(0x0a);
    if (nl >= 0) {
      s.unshift(buf.subarray(nl + 1));
      const m = new RegExp(`^${IMAGE_HEADER} (0|[1-9][0-9]{0,15}) ([0-9a-f]{64})$`).exec(buf.subarray(0, nl).toString("latin1"));
      if (!m) throw new ImageTransferError(`image ${name}: the parent sent no image header`, { details: { image: name } });
      return { size: Number(m[1]), sha256: m[2]! };
    }
    if (buf.length > MAX_HEADER) throw new ImageTransferError(`image ${name}: the parent sent no image header`, { details: { image: name } });
    const b = await s.read();
    if (!b) {
      await s.closed();
      throw refusal(s, name);
    }
    buf = Buffer.concat([buf, b]);
  }
}

/** The typed error for a stream that ended without (all of) the image. */
function refusal(s: ChannelStream, name: string): HsError {
  if (s.error) return s.error;
  if (s.exitCode === undefined) {
    return new PeerGoneError(`the parent went away during image ${name}`, { details: { image: name } });
  }
  return remoteRefusal(s.stderr, s.exitCode, name);
}

/** Appends the stream's bytes to `partial` (batched writes, the channel paused while the disk catches up). */
async function receive(
  s: ChannelStream, partial: string, hasher: FileHasher,
  o: FetchImageOptions & { total: number; start: number },
): Promise<number> {
  const fh = await open(partial, "a", 0o600);
  let moved = 0;
  const report = progressReporter(o, () => moved);
  try {
    let batch: Buffer[] = [];
    let batched = 0;
    const flush = async () => {
      if (batched === 0) return;
      const bufs = batch;
      batch = [];
      batched = 0;
      await fh.writev(bufs);
      hasher.advance(o.start + moved);
    };
    for await (const b of s) {
      batch.push(b);
      batched += b.length;
      moved += b.length;
      if (batched >= WRITE_BATCH) await flush();
      report(false);
    }
    await flush();
    await s.closed();
    // What arrived is on disk (resumable) before the stream's outcome is judged.
    await fh.sync();
    if (s.error) throw s.error;
    if (s.exitCode !== 0) throw refusal(s, o.name);
    report(true);
    return moved;
  } finally {
    await fh.close();
  }
}

/** Throttled progress: bytes, rate of this transfer, ETA; `final` always reports. */
function progressReporter(o: FetchImageOptions & { total: number; start: number }, moved: () => number): (final: boolean) => void {
  const t0 = o.now();
  let lastReport = -Infinity;
  return (final) => {
    const now = o.now();
    if (!o.onProgress || (!final && now - lastReport < (o.progressIntervalMs ?? 500))) return;
    lastReport = now;
    const m = moved();
    const rateBps = m > 0 ? Math.round(m / Math.max((now - t0) / 1000, 0.001)) : 0;
    const done = o.start + m;
    o.onProgress({ image: o.name, done, total: o.total, rateBps, etaS: rateBps > 0 ? Math.ceil((o.total - done) / rateBps) : 0 });
  };
}

/** ssh appends to `partial` itself; progress and the hasher follow the file's growth. */
async function receiveBySsh(
  route: OpenSshRoute, hostKey: string, partial: string, hasher: FileHasher, sha256: string,
  o: FetchImageOptions & { total: number; start: number },
): Promise<number> {
  let moved = 0;
  const report = progressReporter(o, () => moved);
  // Polled more often than reported (the reporter throttles): the hasher and writeback follow closely.
  const pollMs = Math.min(Math.max(o.progressIntervalMs ?? 500, 50), 200);
  await receiveWithOpenSsh({
    route, hostKey, name: o.name, offset: o.start, sha256, partial, commandTimeoutMs: o.commandTimeoutMs, signal: o.signal, log: o.log, pollMs,
    onGrowth: (size) => {
      if (size - o.start <= moved) return;
      moved = size - o.start;
      hasher.advance(size);
      report(false);
    },
  });
  report(true);
  return moved;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try { await fh.sync(); } finally { await fh.close(); }
}
