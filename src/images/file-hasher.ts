// sha256 of a file that is still being appended to, computed off the main
// thread: a worker reads back what the writer says is on disk (from the page
// cache) and hashes it, so receiving over SSH and hashing use two cores. One
// 1 MiB buffer in the worker; nothing queues but small offsets.
// Imported by: src/images.

import { Worker } from "node:worker_threads";
import { ImageTransferError } from "../domain/errors.js";

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

export class FileHasher {
  private readonly worker: Worker;
  private readonly result: Promise<string>;

  constructor(path: string) {
    this.worker = new Worker(WORKER, { eval: true, workerData: { path } });
    this.result = new Promise<string>((resolve, reject) => {
      // Typed: a hash that cannot be taken fails the transfer (the partial stays for a re-run), never as Internal.
      const fail = (why: string, cause?: unknown) => reject(new ImageTransferError(`cannot hash the received image: ${why}`, {
        details: { path }, ...(cause === undefined ? {} : { cause }),
      }));
      this.worker.on("message", (m: { sha256?: string; error?: string }) => {
        if (m.sha256) resolve(m.sha256);
        else fail(m.error ?? "hash worker failed");
      });
      this.worker.once("error", (err) => fail(err.message, err));
      this.worker.once("exit", (code) => fail(`hash worker exited ${code}`));
    });
    this.result.catch(() => {}); // judged by digest(); an abandoned hasher must not be an unhandled rejection
  }

  /** The first `bytes` of the file are on disk: hash up to there. */
  advance(bytes: number): void {
    this.worker.postMessage({ upTo: bytes });
  }

  /** The file is `bytes` long and complete: its sha256. */
  async digest(bytes: number): Promise<string> {
    this.worker.postMessage({ upTo: bytes, done: true });
    try { return await this.result; } finally { await this.worker.terminate(); }
  }

  close(): void {
    void this.worker.terminate();
  }
}
