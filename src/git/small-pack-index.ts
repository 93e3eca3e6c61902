// Builds the version-2 .idx of a small pack held in memory, synchronously,
// with Node's own zlib, CRC-32 and SHA-1: the same bytes `git index-pack`
// writes. An incremental sync's pack is a handful of objects; isomorphic-git's
// indexer takes one webcrypto job (a libuv threadpool round trip) per object,
// queued behind the sync's file work, ~5 ms for a one-commit pack.
// Imported by: src/git.

import { createHash } from "node:crypto";
import { crc32, inflateSync } from "node:zlib";
import { GitProtocolError } from "../domain/errors.js";

/** Inflated bytes held at once past which indexSmallPack declines (a small pack can still inflate large). */
export const SMALL_PACK_MAX_INFLATED = 64 * 1024 * 1024;

const TYPES = ["", "commit", "tree", "blob", "tag"] as const;
const OFS_DELTA = 6;
const REF_DELTA = 7;

interface Entry {
  offset: number;
  /** 1-4 for a whole object; 6/7 for a delta. */
  kind: number;
  /** The bytes from the entry header through the end of its zlib data (CRC-32'd into the idx). */
  end: number;
  data: Buffer;
  baseOffset?: number;
  baseOid?: string;
  /** Set once resolved. */
  type?: number;
  content?: Buffer;
  oid?: string;
}

function corrupt(what: string): GitProtocolError {
  return new GitProtocolError(`malformed pack: ${what}`, { details: { what } });
}

/**
 * The pack's .idx and object ids. Undefined when this pack is not for this
 * indexer (a delta on an object outside the pack, or more than
 * SMALL_PACK_MAX_INFLATED inflated): the caller indexes it another way.
 * Throws GitProtocolError for a pack that is not well formed.
 */
export function indexSmallPack(pack: Buffer): { idx: Buffer; oids: string[] } | undefined {
  if (pack.length < 32 || pack.toString("latin1", 0, 4) !== "PACK") throw corrupt("no pack header");
  const version = pack.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw corrupt(`version ${version}`);
  const count = pack.readUInt32BE(8);
  const bodyEnd = pack.length - 20;
  const entries: Entry[] = [];
  const byOffset = new Map<number, Entry>();
  let inflated = 0;
  let pos = 12;
  for (let i = 0; i < count; i++) {
    if (pos >= bodyEnd) throw corrupt("fewer objects than its header says");
    const offset = pos;
    let c = pack[pos++]!;
    const kind = (c >> 4) & 7;
    let size = c & 15;
    for (let shift = 4; c & 0x80; shift += 7) {
      if (pos >= bodyEnd) throw corrupt("truncated entry header");
      c = pack[pos++]!;
      size += (c & 0x7f) * 2 ** shift;
    }
    const e: Entry = { offset, kind, end: 0, data: Buffer.alloc(0) };
    if (kind === OFS_DELTA) {
      if (pos >= bodyEnd) throw corrupt("truncated delta offset");
      c = pack[pos++]!;
      let back = c & 0x7f;
      while (c & 0x80) {
        if (pos >= bodyEnd) throw corrupt("truncated delta offset");
        c = pack[pos++]!;
        back = ((back + 1) * 128) + (c & 0x7f);
      }
      e.baseOffset = offset - back;
    } else if (kind === REF_DELTA) {
      if (pos + 20 > bodyEnd) throw corrupt("truncated delta base");
      e.baseOid = pack.toString("hex", pos, pos + 20);
      pos += 20;
    } else if (kind < 1 || kind > 4) {
      throw corrupt(`object type ${kind}`);
    }
    let out;
    try {
      out = inflateSync(pack.subarray(pos, bodyEnd), { info: true }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
    } catch (err) {
      throw new GitProtocolError("malformed pack: bad compressed data", { cause: err });
    }
    if (out.buffer.length !== size) throw corrupt("an object's size differs from its header");
    inflated += out.buffer.length;
    if (inflated > SMALL_PACK_MAX_INFLATED) return undefined;
    e.data = out.buffer;
    pos += out.engine.bytesWritten;
    e.end = pos;
    entries.push(e);
    byOffset.set(offset, e);
  }
  if (pos !== bodyEnd) throw corrupt("bytes after the last object");

  const byOid = new Map<string, Entry>();
  const name = (e: Entry, type: number, content: Buffer): void => {
    e.type = type;
    e.content = content;
    e.oid = createHash("sha1").update(`${TYPES[type]} ${content.length}\0`).update(content).digest("hex");
    byOid.set(e.oid, e);
  };
  for (const e of entries) if (e.kind <= 4) name(e, e.kind, e.data);
  // A delta's base comes first for an offset delta; a ref delta's may be anywhere in the pack.
  for (let progress = true; progress;) {
    progress = false;
    for (const e of entries) {
      if (e.oid) continue;
      const base = e.baseOffset !== undefined ? byOffset.get(e.baseOffset) : byOid.get(e.baseOid!);
      if (e.baseOffset !== undefined && !base) throw corrupt("delta base offset names no object");
      if (!base?.content) continue;
      name(e, base.type!, applyDelta(base.content, e.data));
      progress = true;
    }
  }
  // An unresolved ref delta names an object outside the pack (a thin pack): not for this indexer.
  if (entries.some((e) => !e.oid)) return undefined;

  const sorted = [...entries].sort((a, b) => (a.oid! < b.oid! ? -1 : a.oid! > b.oid! ? 1 : 0));
  const n = sorted.length;
  const idx = Buffer.alloc(8 + 256 * 4 + n * 28 + 40);
  idx.writeUInt32BE(0xff744f63, 0);
  idx.writeUInt32BE(2, 4);
  const fanout = new Array<number>(256).fill(0);
  for (const e of sorted) fanout[parseInt(e.oid!.slice(0, 2), 16)]!++;
  for (let i = 0, sum = 0; i < 256; i++) { sum += fanout[i]!; idx.writeUInt32BE(sum, 8 + i * 4); }
  let at = 8 + 1024;
  for (const e of sorted) { idx.write(e.oid!, at, "hex"); at += 20; }
  for (const e of sorted) { idx.writeUInt32BE(crc32(pack.subarray(e.offset, e.end)) >>> 0, at); at += 4; }
  for (const e of sorted) {
    if (e.offset >= 0x80000000) return undefined; // a 2 GiB offset is not a small pack
    idx.writeUInt32BE(e.offset, at);
    at += 4;
  }
  pack.copy(idx, at, bodyEnd);
  at += 20;
  createHash("sha1").update(idx.subarray(0, at)).digest().copy(idx, at);
  return { idx, oids: sorted.map((e) => e.oid!) };
}

/** git's delta format: base size, result size, then copy (from the base) and insert (literal) instructions. */
export function applyDelta(base: Buffer, delta: Buffer): Buffer {
  let pos = 0;
  const varint = (): number => {
    let v = 0;
    let shift = 0;
    let c;
    do {
      if (pos >= delta.length) throw corrupt("truncated delta header");
      c = delta[pos++]!;
      v += (c & 0x7f) * 2 ** shift;
      shift += 7;
    } while (c & 0x80);
    return v;
  };
  if (varint() !== base.length) throw corrupt("delta base size mismatch");
  const out = Buffer.alloc(varint());
  let o = 0;
  while (pos < delta.length) {
    const op = delta[pos++]!;
    if (op & 0x80) {
      let off = 0;
      let size = 0;
      for (let b = 0; b < 4; b++) if (op & (1 << b)) off += delta[pos++]! * 2 ** (8 * b);
      for (let b = 0; b < 3; b++) if (op & (0x10 << b)) size += delta[pos++]! * 2 ** (8 * b);
      if (size === 0) size = 0x10000;
      if (pos > delta.length || off + size > base.length || o + size > out.length) throw corrupt("delta copy out of range");
      base.copy(out, o, off, off + size);
      o += size;
    } else if (op !== 0) {
      if (pos + op > delta.length || o + op > out.length) throw corrupt("delta insert out of range");
      delta.copy(out, o, pos, pos + op);
      pos += op;
      o += op;
    } else {
      throw corrupt("reserved delta instruction");
    }
  }
  if (o !== out.length) throw corrupt("delta result size mismatch");
  return out;
}
