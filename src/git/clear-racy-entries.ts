// Clears a worktree index's "racily clean" entries without git's re-hash: the
// files written in the index's own second are hashed here (OpenSSL SHA-1,
// about 3x git's sha1dc on this class of machine), and when every one still matches its blob the
// index's mtime is moved past that second, so git no longer treats them as racy.
// Anything this does not fully understand is left to git (`fallback`).
// Imported by: src/git/index-refresh.ts.

import { open, readFile, utimes, unlink, stat } from "node:fs/promises";
import { closeSync, lstatSync, openSync, readlinkSync, readSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";

/** What happened: `cleared` the racy entries were verified and the index moved on; `none` there were none. */
export type ClearRacyResult = "cleared" | "none" | "early" | "busy" | "fallback";

/**
 * A file's mtime can lag the wall clock by one coarse kernel tick, so a
 * write just after the second boundary may still be stamped inside it:
 * hashing starts only this long after the index's second has ended.
 */
export const CLOCK_MARGIN_MS = 50;
/** Longest stretch the hashing holds the event loop. */
const SLICE_MS = 10;

interface Entry { name: string; mtimeSec: number; ctimeSec: number; ino: number; mode: number; uid: number; gid: number; size: number; oid: string }

/**
 * The entries of an index file, version 2 or 3, SHA-1 object names, stage 0,
 * no skip-worktree or intent-to-add entries; undefined for anything else (the
 * caller leaves that index to git). Format: git's Documentation/gitformat-index.
 */
export function parseIndex(buf: Buffer): Entry[] | undefined {
  if (buf.length < 12 + 20 || buf.toString("latin1", 0, 4) !== "DIRC") return undefined;
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) return undefined;
  const count = buf.readUInt32BE(8);
  const end = buf.length - 20; // trailing checksum
  const out: Entry[] = [];
  let off = 12;
  for (let i = 0; i < count; i++) {
    if (off + 62 > end) return undefined;
    const flags = buf.readUInt16BE(off + 60);
    if (flags & 0x3000) return undefined; // a merge stage: a conflicted index
    let fixed = 62;
    if (flags & 0x4000) {
      if (version < 3 || off + 64 > end) return undefined;
      if (buf.readUInt16BE(off + 62) !== 0) return undefined; // skip-worktree, intent-to-add
      fixed = 64;
    }
    const nul = buf.indexOf(0, off + fixed);
    if (nul < 0 || nul >= end) return undefined;
    out.push({
      ctimeSec: buf.readUInt32BE(off), mtimeSec: buf.readUInt32BE(off + 8), ino: buf.readUInt32BE(off + 20),
      mode: buf.readUInt32BE(off + 24), uid: buf.readUInt32BE(off + 28), gid: buf.readUInt32BE(off + 32),
      size: buf.readUInt32BE(off + 36), oid: buf.toString("hex", off + 40, off + 60), name: buf.toString("utf8", off + fixed, nul),
    });
    // The entry is padded with 1-8 NULs to a multiple of eight bytes.
    off += (fixed + (nul - off - fixed) + 8) & ~7;
  }
  return off <= end ? out : undefined;
}

/** git's own stat comparison (ce_match_stat_basic, whole seconds, uint32 fields); false: let git look. */
function statMatches(e: Entry, st: import("node:fs").Stats): boolean {
  const type = e.mode & 0o170000;
  if (type === 0o100000) {
    if (!st.isFile() || ((e.mode ^ st.mode) & 0o100) !== 0) return false;
  } else if (type === 0o120000) {
    if (!st.isSymbolicLink()) return false;
  } else return false; // a gitlink: git compares the submodule's HEAD
  const u32 = (n: number) => n >>> 0;
  return e.size !== 0 // 0 is git's "smudged" marker: it must re-check the file
    && u32(Math.floor(st.mtimeMs / 1000)) === e.mtimeSec && u32(Math.floor(st.ctimeMs / 1000)) === e.ctimeSec
    && u32(st.ino) === e.ino && u32(st.uid) === e.uid && u32(st.gid) === e.gid && u32(st.size) === e.size;
}

/**
 * Hashes files as git names blobs, on the calling thread with one reused
 * buffer (sync reads and OpenSSL's SHA-1 run at about 1.6 GB/s here; the
 * threadpool's per-file hops cost more than they gained), yielding to the
 * event loop every SLICE_MS so a daemon keeps serving meanwhile.
 */
class BlobHasher {
  private readonly buf = Buffer.allocUnsafe(1 << 20);
  private sliceStart = performance.now();

  private async yieldIfDue(): Promise<void> {
    if (performance.now() - this.sliceStart < SLICE_MS) return;
    await new Promise((r) => setImmediate(r));
    this.sliceStart = performance.now();
  }

  /** The blob name of what is at `path` now, with no conversion; "" when it cannot be read whole. */
  async oid(path: string, e: Entry): Promise<string> {
    await this.yieldIfDue();
    if ((e.mode & 0o170000) === 0o120000) {
      const target = readlinkSync(path, "buffer");
      return createHash("sha1").update(`blob ${target.length}\0`).update(target).digest("hex");
    }
    const h = createHash("sha1").update(`blob ${e.size}\0`);
    const fd = openSync(path, "r");
    try {
      let got = 0;
      for (;;) {
        const n = readSync(fd, this.buf, 0, this.buf.length, null);
        if (n === 0) break;
        h.update(this.buf.subarray(0, n));
        got += n;
        if (got > e.size) return "";
        await this.yieldIfDue();
      }
      if (got !== e.size) return ""; // changed under us: not the blob
    } finally { closeSync(fd); }
    return h.digest("hex");
  }
}

/**
 * Where git could apply a conversion (attributes, eol, filters), the bytes on
 * disk are not what git hashes; such a tree is left to git. Global and system
 * config are off for worktrees (run-git.ts), so the repo's own config and
 * attributes are all there is.
 */
async function conversionPossible(gitDir: string, entries: readonly Entry[]): Promise<boolean> {
  const config = await readFile(join(gitDir, "config"), "utf8").catch(() => "");
  // git's defaults for the rest are what this assumes (hsd's own worktrees, init-repo.ts, set none of them).
  if (/autocrlf|\beol\b|filter|objectformat|checkstat|(filemode|symlinks|trustctime)\s*=\s*false|(ignorecase|precomposeunicode)\s*=\s*true/i.test(config)) return true;
  if (await stat(join(gitDir, "info", "attributes")).then(() => true, () => false)) return true;
  return entries.some((e) => e.name === ".gitattributes" || e.name.endsWith("/.gitattributes"));
}

/** Bytes of the files git would re-hash as racily clean in `worktree`'s index now; 0 when unknown. */
export async function racyBytes(worktree: string): Promise<number> {
  const index = join(worktree, ".git", "index");
  const [st, buf] = await Promise.all([stat(index).catch(() => undefined), readFile(index).catch(() => undefined)]);
  const entries = buf && parseIndex(buf);
  if (!st || !entries) return 0;
  const sec = Math.floor(st.mtimeMs / 1000);
  return entries.reduce((n, e) => (e.mtimeSec >= sec ? n + e.size : n), 0);
}

/**
 * Verifies the index's racy entries and, when all match, moves the index's
 * mtime to now. Correct under concurrent edits: hashing starts after the
 * index's second (plus CLOCK_MARGIN_MS) has ended, so an edit after a file's
 * hash changes its mtime to a later second than the one the index records
 * and git sees it by stat; an edit before it fails the hash. The index is
 * held with git's own index.lock throughout.
 */
export async function clearRacyEntries(worktree: string, now: () => number = Date.now): Promise<ClearRacyResult> {
  const gitDir = join(worktree, ".git");
  const index = join(gitDir, "index");
  const lock = join(gitDir, "index.lock");
  let locked;
  try { locked = await open(lock, "wx"); } catch { return "busy"; }
  try {
    const st0 = await stat(index).catch(() => undefined);
    if (!st0) return "none";
    const sec = Math.floor(st0.mtimeMs / 1000);
    const entries = parseIndex(await readFile(index));
    if (!entries) return "fallback";
    const racy = entries.filter((e) => e.mtimeSec >= sec);
    if (racy.length === 0) return "none";
    if (now() < (sec + 1) * 1000 + CLOCK_MARGIN_MS) return "early";
    if (await conversionPossible(gitDir, entries)) return "fallback";
    const hasher = new BlobHasher();
    for (const e of racy) {
      const path = join(worktree, e.name);
      let st;
      try { st = lstatSync(path); } catch { return "fallback"; }
      if (!statMatches(e, st) || await hasher.oid(path, e).catch(() => "") !== e.oid) return "fallback";
    }
    const st1 = await stat(index).catch(() => undefined);
    if (!st1 || st1.mtimeMs !== st0.mtimeMs || st1.ino !== st0.ino || st1.size !== st0.size) return "fallback";
    const t = now() / 1000;
    await utimes(index, t, t);
    return "cleared";
  } finally {
    await locked.close().catch(() => {});
    await unlink(lock).catch(() => {});
  }
}
