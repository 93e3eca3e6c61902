// The sha256 of an image file, computed once and cached by path, size and
// mtime in the level's state (a 3 GB image costs seconds to hash; a restart
// or a second child must not pay it again). Unchanged size+mtime = same digest.
// Imported by: src/images, src/daemon, src/level, src/providers.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import type { Logger } from "../log/logger.js";
import { writeFileAtomic } from "../util/atomic-write.js";
import { readTextIfExists } from "../util/read-if-exists.js";

export interface ImageDigest { readonly size: number; readonly sha256: string }
interface CacheEntry { size: number; mtimeMs: number; sha256: string }

/** sha256 of a file's bytes, streamed (constant memory). */
export async function sha256File(path: string, signal?: AbortSignal): Promise<string> {
  const h = createHash("sha256");
  await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), h, { signal });
  return h.digest("hex");
}

export class ImageDigests {
  private cache: Record<string, CacheEntry> | undefined;
  private readonly inflight = new Map<string, Promise<ImageDigest>>();
  private writes: Promise<void> = Promise.resolve();

  constructor(private readonly file: string, private readonly log: Logger) {}

  /** The file's size and sha256; hashes it only when size or mtime changed since last time. */
  digest(path: string): Promise<ImageDigest> {
    let p = this.inflight.get(path);
    if (!p) {
      p = this.compute(path).finally(() => this.inflight.delete(path));
      this.inflight.set(path, p);
    }
    return p;
  }

  /** The cached digest when the file is unchanged since it was hashed; undefined otherwise (never hashes). */
  async known(path: string): Promise<ImageDigest | undefined> {
    const cache = await this.load();
    const st = await stat(path).catch(() => undefined);
    const hit = cache[path];
    return st && hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs ? { size: hit.size, sha256: hit.sha256 } : undefined;
  }

  /** Records a digest the caller just verified (a received image): no re-hash next time. */
  async remember(path: string, sha256: string): Promise<void> {
    const st = await stat(path);
    await this.store(path, { size: st.size, mtimeMs: st.mtimeMs, sha256 });
  }

  private async compute(path: string): Promise<ImageDigest> {
    const cache = await this.load();
    const st = await stat(path);
    const hit = cache[path];
    if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs) return { size: hit.size, sha256: hit.sha256 };
    const t0 = Date.now();
    const sha256 = await sha256File(path);
    this.log.info({ path, size: st.size, ms: Date.now() - t0 }, "image hashed");
    await this.store(path, { size: st.size, mtimeMs: st.mtimeMs, sha256 });
    return { size: st.size, sha256 };
  }

  private async load(): Promise<Record<string, CacheEntry>> {
    if (this.cache) return this.cache;
    const text = await readTextIfExists(this.file);
    try {
      this.cache = text ? (JSON.parse(text) as Record<string, CacheEntry>) : {};
    } catch {
      // A cache, not a record: a torn or foreign file only costs a re-hash.
      this.log.warn({ file: this.file }, "image digest cache unreadable; starting over");
      this.cache = {};
    }
    return this.cache;
  }

  private async store(path: string, e: CacheEntry): Promise<void> {
    const cache = await this.load();
    cache[path] = e;
    const text = JSON.stringify(cache);
    const run = this.writes.then(() => writeFileAtomic(this.file, text, { mode: 0o600 }));
    this.writes = run.catch(() => undefined);
    await run;
  }
}
