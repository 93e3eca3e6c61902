// sha256 of a file that is still being appended to: what the writer says is on
// disk is read back (from the page cache) and hashed. A large image is hashed
// off the main thread by a worker, so receiving over SSH and hashing use two
// cores; a small one in this thread, where its few ms of hashing cost less than
// a worker's start (~20 ms of CPU). One 1 MiB buffer; nothing queues but offsets.
// Imported by: src/images.

import { Worker } from "node:worker_threads";
import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { ImageTransferError } from "../domain/errors.js";

/**
 * Up to this many bytes an image is hashed in this thread (SHA-NI: ~0.5 ms a
 * MiB, in 1 MiB slices between I/O); above it, in a worker.
 */
export const INLINE_HASH_MAX = 64 << 20;
const CHUNK = 1 << 20;

// Inline (eval) so the same code runs from src/ under tsx and from the dist bundle.
const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const h = require("node:crypto").createHash("sha256");
// Opened at the first byte said to be on disk, never at start: the writer may
// not have created the file yet when this thread comes up.
let fd;
const buf = Buffer.allocUnsafe(1 << 20);
let pos = 0;
parentPort.on("message", (m) => {
  try {
    if (fd === undefined && pos < m.upTo) fd = fs.openSync(workerData.path, "r");
    while (pos < m.upTo) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, m.upTo - pos), pos);
      if (n <= 0) throw new Error("file shorter than written");
      h.update(buf.subarray(0, n));
      pos += n;
    }
    if (m.done) { if (fd !== undefined) fs.closeSync(fd); parentPort.postMessage({ sha256: h.digest("hex") }); }
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message || err) });
  }
});
`;

/** Hashes a file as it grows: advance() as bytes land, digest() once it is whole. */
export interface FileHasher {
  /** The first `bytes` of the file are on disk: hash up to there. */
  advance(bytes: number): void;
  /** The file is `bytes` long and complete: its sha256. */
  digest(bytes: number): Promise<string>;
  close(): void;
}

/** The hasher for an image of `size` bytes at `path`: in this thread when small, a worker otherwise. */
export function fileHasher(path: string, size: number): FileHasher {
  return size <= INLINE_HASH_MAX ? new InlineFileHasher(path) : new WorkerFileHasher(path);
}

const hashFailure = (path: string, why: string, cause?: unknown) => new ImageTransferError(`cannot hash the received image: ${why}`, {
  details: { path }, ...(cause === undefined ? {} : { cause }),
});

/** In this thread: reads are async (the thread pool), only the hash updates run here. */
export class InlineFileHasher implements FileHasher {
  private readonly hash = createHash("sha256");
  private readonly buf = Buffer.allocUnsafe(CHUNK);
  private fh: FileHandle | undefined;
  private pos = 0;
  private upTo = 0;
  // One read loop at a time; advance() only raises the mark it runs to.
  private running: Promise<void> = Promise.resolve();
  private failed: ImageTransferError | undefined;
  private closed = false;

  constructor(private readonly path: string) {}

  advance(bytes: number): void {
    if (bytes <= this.upTo) return;
    this.upTo = bytes;
    this.running = this.running.then(() => this.catchUp());
  }

  async digest(bytes: number): Promise<string> {
    this.advance(bytes);
    await this.running;
    await this.release();
    if (this.failed) throw this.failed;
    if (this.pos !== bytes) throw hashFailure(this.path, "file shorter than written");
    return this.hash.digest("hex");
  }

  close(): void {
    this.closed = true;
    void this.running.then(() => this.release());
  }

  private async catchUp(): Promise<void> {
    if (this.failed || this.closed) return;
    try {
      // Opened at the first byte said to be on disk, never at start: the writer may not have created the file yet.
      if (this.pos < this.upTo) this.fh ??= await open(this.path, "r");
      while (this.pos < this.upTo && !this.closed) {
        const { bytesRead } = await this.fh!.read(this.buf, 0, Math.min(CHUNK, this.upTo - this.pos), this.pos);
        if (bytesRead <= 0) throw new Error("file shorter than written");
        this.hash.update(this.buf.subarray(0, bytesRead));
        this.pos += bytesRead;
      }
    } catch (err) {
      this.failed = hashFailure(this.path, (err as Error).message, err);
    }
  }

  private async release(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
  }
}

export class WorkerFileHasher implements FileHasher {
  private readonly worker: Worker;
  private readonly result: Promise<string>;

  constructor(path: string) {
    this.worker = new Worker(WORKER, { eval: true, workerData: { path } });
    this.result = new Promise<string>((resolve, reject) => {
      // Typed: a hash that cannot be taken fails the transfer (the partial stays for a re-run), never as Internal.
      const fail = (why: string, cause?: unknown) => reject(hashFailure(path, why, cause));
      this.worker.on("message", (m: { sha256?: string; error?: string }) => {
        if (m.sha256) resolve(m.sha256);
        else fail(m.error ?? "hash worker failed");
      });
      this.worker.once("error", (err) => fail(err.message, err));
      this.worker.once("exit", (code) => fail(`hash worker exited ${code}`));
    });
    this.result.catch(() => {}); // judged by digest(); an abandoned hasher must not be an unhandled rejection
  }

  advance(bytes: number): void {
    this.worker.postMessage({ upTo: bytes });
  }

  async digest(bytes: number): Promise<string> {
    this.worker.postMessage({ upTo: bytes, done: true });
    try { return await this.result; } finally { await this.worker.terminate(); }
  }

  close(): void {
    void this.worker.terminate();
  }
}
