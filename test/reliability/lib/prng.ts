// Seeded PRNG and random-input helpers for the reliability suite: the same
// seed always produces the same cases, so any failure is replayable with
// HSD_RELIABILITY_SEED. Imported by test/reliability/** only.

/** sfc32-style generator from a 32-bit seed; fast and good enough for fuzzing. */
export class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number) {
    this.a = 0x9e3779b9; this.b = 0x243f6a88; this.c = 0xb7e15162; this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }
  u32(): number {
    this.a >>>= 0; this.b >>>= 0; this.c >>>= 0; this.d >>>= 0;
    const t = (this.a + this.b) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.d = (this.d + 1) | 0;
    const r = (t + this.d) | 0;
    this.c = (this.c + r) | 0;
    return r >>> 0;
  }
  /** 0 <= n < max */
  int(max: number): number { return max <= 0 ? 0 : this.u32() % max; }
  chance(p: number): boolean { return this.u32() / 4294967296 < p; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
  /** A short length, sometimes large: most bugs live near 0, boundaries and big. */
  len(max = 64): number {
    const r = this.int(10);
    if (r < 6) return this.int(Math.min(max, 16) + 1);
    if (r < 9) return this.int(max + 1);
    return this.int(max * 64 + 1);
  }
  /** A string from a mix of ASCII, shell/quote metacharacters, control chars and unicode. */
  str(n = this.len()): string {
    const pools = [
      "abcdefghijklmnopqrstuvwxyz0123456789-_.",
      "'\"`$;|&<>(){}[]\\/ \t\n*?!#~=%^,:@",
      "\0\x01\x1b\x7f\r\u2028",
      "éß中😀\ufeff\u202e",
    ];
    let s = "";
    for (let i = 0; i < n; i++) { const p = this.pick(pools); s += [...p][this.int([...p].length)]; }
    return s;
  }
  /** Mutates a buffer: flip, insert, delete, duplicate, truncate, splice random bytes. */
  mutate(buf: Buffer, rounds = 1 + this.int(4)): Buffer {
    let b = Buffer.from(buf);
    for (let r = 0; r < rounds; r++) {
      const at = this.int(b.length + 1);
      switch (this.int(6)) {
        case 0: if (b.length) b[Math.min(at, b.length - 1)] ^= 1 << this.int(8); break;
        case 1: b = Buffer.concat([b.subarray(0, at), this.bytes(1 + this.int(8)), b.subarray(at)]); break;
        case 2: b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + this.int(8)))]); break;
        case 3: b = Buffer.concat([b, b.subarray(at)]); break;
        case 4: b = b.subarray(0, at); break;
        default: if (b.length) b[Math.min(at, b.length - 1)] = this.pick([0x00, 0xff, 0x7f, 0x80, 0x30, 0x66]); break;
      }
    }
    return b;
  }
}

/** Case count: HSD_RELIABILITY_CASES (CI: small; the long run sets 100000+). */
export function caseCount(ciDefault: number): number {
  const v = Number(process.env.HSD_RELIABILITY_CASES);
  return Number.isInteger(v) && v > 0 ? v : ciDefault;
}

/** The run's seed: HSD_RELIABILITY_SEED, else a fixed default (CI is reproducible). */
export function seed(): number {
  const v = Number(process.env.HSD_RELIABILITY_SEED);
  return Number.isInteger(v) ? v >>> 0 : 0x5eed7;
}

/** True in the long run (HSD_RELIABILITY_LONG=1): bigger loads and counts. */
export const LONG = process.env.HSD_RELIABILITY_LONG === "1";
