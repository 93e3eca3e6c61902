// FileHasher, both kinds (a worker for a large image, this thread for a small
// one): hashing a partial image as it lands. It must not touch
// the file before it is told bytes are on disk (the OpenSSH route creates the
// partial only after the header's round trip, and a worker that opened it at
// start failed the sync with an untyped ENOENT, seen as Internal), and what it
// cannot hash is a typed ImageTransfer failure.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile, appendFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileHasher, InlineFileHasher, INLINE_HASH_MAX, WorkerFileHasher, type FileHasher } from "../../src/images/file-hasher.js";
import { HsError } from "../../src/domain/errors.js";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "hsd-hasher-"));
  try { await fn(dir); } finally { await rm(dir, { recursive: true, force: true }); }
}

const KINDS: Record<string, (path: string) => FileHasher> = {
  worker: (p) => new WorkerFileHasher(p),
  inline: (p) => new InlineFileHasher(p),
};

test("an image up to INLINE_HASH_MAX is hashed in this thread, a larger one by a worker", () => {
  assert.ok(fileHasher("/nonexistent", INLINE_HASH_MAX) instanceof InlineFileHasher);
  const w = fileHasher("/nonexistent", INLINE_HASH_MAX + 1);
  assert.ok(w instanceof WorkerFileHasher);
  w.close();
});

for (const [kind, make] of Object.entries(KINDS)) {
  test(`${kind}: a hasher whose file is never written (an empty image) does not open it: the empty sha256`, () => withDir(async (dir) => {
    const h = make(join(dir, "never.img.partial"));
    assert.equal(await h.digest(0), createHash("sha256").digest("hex"));
  }));

  test(`${kind}: a hasher made before its file exists hashes what is appended after`, () => withDir(async (dir) => {
    const p = join(dir, "late.img.partial");
    const h = make(p);
    h.advance(0); // a fresh transfer: nothing on disk yet
    const a = randomBytes(3 << 20);
    const b = randomBytes(1 << 20);
    await writeFile(p, a);
    h.advance(a.length);
    await appendFile(p, b);
    assert.equal(await h.digest(a.length + b.length), createHash("sha256").update(a).update(b).digest("hex"));
  }));

  test(`${kind}: bytes said to be on disk that are not: a typed ImageTransfer failure, not an untyped error`, () => withDir(async (dir) => {
    const p = join(dir, "short.img.partial");
    await writeFile(p, Buffer.alloc(10));
    const h = make(p);
    await assert.rejects(h.digest(100), (err: unknown) => err instanceof HsError && err.code === "ImageTransfer");
    const gone = make(join(dir, "missing.img.partial"));
    await assert.rejects(gone.digest(5), (err: unknown) => err instanceof HsError && err.code === "ImageTransfer");
  }));
}
