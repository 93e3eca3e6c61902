// Clears a worktree index's "racily clean" entries without git's re-hash: the
// files written in the index's own second are hashed here (OpenSSL SHA-1 on
// libuv's threadpool, several at once, about 4x git's single-threaded sha1dc
// on this class of machine), and when every one still matches its blob the
// index's mtime is moved past that second, so git no longer treats them as racy.
// Anything this does not fully understand is left to git (`fallback`).
// Imported by: src/git/index-refresh.ts.

import { open, readFile, readlink, lstat, utimes, unlink, stat } from "node:fs/promises";
import { createHash, webcrypto } from "node:crypto";
import { join } from "node:path";

/** What happened: `cleared` the racy entries were verified and the index moved on; `none` there were none. */
export type ClearRacyResult = "cleared" | "none" | "early" | "busy" | "fallback";

/**
 * A file's mtime can lag the wall clock by one coarse kernel tick, so a
 * write just after the second boundary may still be stamped inside it:
 * hashing starts only this long after the index's second has ended.
 */
export const CLOCK_MARGIN_MS = 50;
/** Files hashed at once; each holds one file in memory (see STREAM_ABOVE). */
const PARALLEL = 4;
/** Bigger files are hashed as a stream on the main thread, so memory stays bounded. */
const STREAM_ABOVE = 8 << 20;

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

/** The blob name of what is at `path` now, as git computes it with no conversion configured. */
async function blobOid(path: string, e: Entry): Promise<string> {
  if ((e.mode & 0o170000) === 0o120000) {
    const target = Buffer.from(await readlink(path, "buffer"));
    return createHash("sha1").update(`blob ${target.length}\0`).update(target).digest("hex");
  }
  const header = Buffer.from(`blob ${e.size}\0`);
  if (e.size > STREAM_ABOVE) {
    const h = createHash("sha1").update(header);
    const fh = await open(path, "r");
    try { for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20 })) h.update(chunk as Buffer); } finally { await fh.close().catch(() => {}); }
    return h.digest("hex");
  }
  const buf = Buffer.allocUnsafe(header.length + e.size);
  header.copy(buf);
  const fh = await open(path, "r");
  try {
    let got = 0;
    while (got < e.size) {
      const { bytesRead } = await fh.read(buf, header.length + got, e.size - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got !== e.size) return ""; // shrank under us: not the blob
  } finally { await fh.close(); }
  return Buffer.from(await webcrypto.subtle.digest("SHA-1", buf)).toString("hex");
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
    let bad = false;
    let next = 0;
    const worker = async () => {
      while (!bad && next < racy.length) {
        const e = racy[next++]!;
        const path = join(worktree, e.name);
        const st = await lstat(path).catch(() => undefined);
        if (!st || !statMatches(e, st) || await blobOid(path, e).catch(() => "") !== e.oid) bad = true;
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, racy.length) }, worker));
    if (bad) return "fallback";
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
