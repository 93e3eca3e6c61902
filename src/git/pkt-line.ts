// Git pkt-line framing (gitprotocol-common): encode, and an incremental decoder
// that rejects malformed input with a typed GitProtocolError. Input comes from
// the network, so every length is checked.
// Imported by: src/git.

import { GitProtocolError } from "../domain/errors.js";

/** Largest pkt-line: 4 length bytes + 65516 payload bytes. */
export const MAX_PKT_LEN = 65520;

export type Pkt =
  | { readonly type: "data"; readonly payload: Buffer }
  | { readonly type: "flush" }
  | { readonly type: "delim" }
  | { readonly type: "response-end" };

export function encodePktLine(payload: string | Buffer): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
  if (body.length + 4 > MAX_PKT_LEN) throw new GitProtocolError("pkt-line payload too long", { details: { length: body.length } });
  return Buffer.concat([Buffer.from((body.length + 4).toString(16).padStart(4, "0"), "ascii"), body]);
}

export const FLUSH_PKT = Buffer.from("0000", "ascii");

function hexLen(buf: Buffer, at: number): number {
  let n = 0;
  for (let i = at; i < at + 4; i++) {
    const c = buf[i]!;
    let v: number;
    if (c >= 0x30 && c <= 0x39) v = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) v = c - 0x57;
    else if (c >= 0x41 && c <= 0x46) v = c - 0x37;
    else throw new GitProtocolError("malformed pkt-line length", { details: { offset: at } });
    n = n * 16 + v;
  }
  return n;
}

/**
 * Splits one complete pkt-line off the front of `buf`. Returns undefined when
 * more bytes are needed, else the packet and the bytes it used.
 */
export function readPkt(buf: Buffer, offset = 0): { pkt: Pkt; used: number } | undefined {
  if (buf.length - offset < 4) return undefined;
  const len = hexLen(buf, offset);
  if (len === 0) return { pkt: { type: "flush" }, used: 4 };
  if (len === 1) return { pkt: { type: "delim" }, used: 4 };
  if (len === 2) return { pkt: { type: "response-end" }, used: 4 };
  if (len < 4 || len > MAX_PKT_LEN) throw new GitProtocolError("invalid pkt-line length", { details: { length: len } });
  if (buf.length - offset < len) return undefined;
  return { pkt: { type: "data", payload: buf.subarray(offset + 4, offset + len) }, used: len };
}

/**
 * Reads pkt-lines off a chunk source (a ChannelStream, or any pull of
 * Buffers) without concatenating more than one packet's bytes: a packet
 * inside one chunk is a view of it, one that spans chunks costs one copy of
 * at most MAX_PKT_LEN bytes. Memory is one packet, whatever the stream's size.
 */
export class PktStreamReader {
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;
  /** Set when the source ended inside a packet (the peer hung up mid-message). */
  truncated = false;

  constructor(private readonly next: () => Promise<Buffer | undefined>) {}

  /** The next packet and its raw bytes; undefined at EOF between packets; GitProtocolError at EOF inside one. */
  async read(): Promise<{ pkt: Pkt; raw: Buffer } | undefined> {
    for (;;) {
      const r = readPkt(this.buf, this.off);
      if (r) {
        const raw = this.buf.subarray(this.off, this.off + r.used);
        this.off += r.used;
        return { pkt: r.pkt, raw };
      }
      const chunk = await this.next();
      if (!chunk) {
        if (this.off < this.buf.length) {
          this.truncated = true;
          throw new GitProtocolError("stream ended inside a pkt-line", { details: { partial: this.buf.length - this.off } });
        }
        return undefined;
      }
      const rest = this.buf.subarray(this.off);
      this.buf = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
      this.off = 0;
    }
  }

  /** Bytes read from the source and not yet returned as packets (handed back when switching to raw chunks). */
  takeRest(): Buffer {
    const rest = this.buf.subarray(this.off);
    this.buf = Buffer.alloc(0);
    this.off = 0;
    return rest;
  }
}

/** Parses a whole buffer of pkt-lines; trailing partial data is an error. */
export function parsePktLines(buf: Buffer): Pkt[] {
  const out: Pkt[] = [];
  let off = 0;
  while (off < buf.length) {
    const r = readPkt(buf, off);
    if (!r) throw new GitProtocolError("truncated pkt-line", { details: { offset: off } });
    out.push(r.pkt);
    off += r.used;
  }
  return out;
}

export interface AdvertisedRef { readonly oid: string; readonly name: string }

export interface RefAdvertisement {
  readonly refs: readonly AdvertisedRef[];
  readonly capabilities: readonly string[];
  /** Set when the server answered with "ERR <msg>" instead of refs. */
  readonly error?: string;
}

const OID = /^[0-9a-f]{40}$/;
const REF_NAME = /^[\x21-\x7e][\x20-\x7e]*$/;

/** Parses a v0 upload-pack advertisement (the pkt-lines before the first flush). */
export function parseAdvertisement(pkts: readonly Pkt[]): RefAdvertisement {
  const refs: AdvertisedRef[] = [];
  let capabilities: string[] = [];
  for (let i = 0; i < pkts.length; i++) {
    const p = pkts[i]!;
    if (p.type === "flush") break;
    if (p.type !== "data") throw new GitProtocolError("unexpected special packet in ref advertisement");
    let line = p.payload.toString("utf8");
    if (line.endsWith("\n")) line = line.slice(0, -1);
    if (i === 0 && line.startsWith("ERR ")) return { refs: [], capabilities: [], error: line.slice(4) };
    if (i === 0 && line.startsWith("version ")) throw new GitProtocolError("server spoke a protocol version other than v0");
    let rest = line;
    if (i === 0) {
      const nul = line.indexOf("\0");
      if (nul >= 0) {
        capabilities = line.slice(nul + 1).split(" ").filter(Boolean);
        rest = line.slice(0, nul);
      }
    }
    const sp = rest.indexOf(" ");
    const oid = rest.slice(0, sp);
    const name = rest.slice(sp + 1);
    if (sp !== 40 || !OID.test(oid) || !REF_NAME.test(name)) {
      throw new GitProtocolError("malformed ref advertisement line", { details: { index: i } });
    }
    refs.push({ oid, name });
  }
  return { refs, capabilities };
}
