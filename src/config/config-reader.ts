// Typed reads of hsd.yaml values with their file line. A bad value is recorded
// in ConfigIssues and the read returns the default, so parsing goes on and one
// run reports every mistake.
// Imported by: src/config, src/providers.

import { isMap, type Document, type LineCounter } from "yaml";
import type { ConfigIssues } from "./config-issues.js";

export type Raw = Record<string, unknown>;
export type KeyPath = (string | number)[];

export class ConfigReader {
  constructor(
    private readonly file: string,
    private readonly doc: Document | null,
    private readonly lc: LineCounter,
    readonly issues: ConfigIssues,
  ) {}

  /** Records a problem at `path` (its line from the document). */
  fail(path: KeyPath, message: string): void {
    const line = this.lineOf(path);
    this.issues.add({ file: this.file, ...(line ? { line } : {}), key: path.join("."), message });
  }

  lineOf(path: KeyPath): number | undefined {
    if (!this.doc) return undefined;
    for (let n = path.length; n >= 0; n--) {
      // A key's own position first: an unknown key's value may be empty (no range).
      if (n > 0) {
        const parent = this.doc.getIn(path.slice(0, n - 1), true);
        if (isMap(parent)) {
          for (const item of parent.items) {
            const k = item.key as { value?: unknown; range?: [number, number, number] } | null;
            if (k && k.value === path[n - 1] && k.range) return this.lc.linePos(k.range[0]).line;
          }
        }
      }
      const node = this.doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === "object" && node.range) return this.lc.linePos(node.range[0]).line;
    }
    return undefined;
  }

  /** A mapping with only `allowed` keys; an unknown key is an issue and is left out. */
  map(v: unknown, path: KeyPath, allowed: readonly string[]): Raw {
    if (v === undefined || v === null) return {};
    if (typeof v !== "object" || Array.isArray(v)) {
      this.fail(path, "must be a mapping");
      return {};
    }
    const out: Raw = {};
    for (const [k, val] of Object.entries(v as Raw)) {
      if (allowed.includes(k)) out[k] = val;
      else this.fail([...path, k], `unknown key (expected one of: ${allowed.join(", ")})`);
    }
    return out;
  }

  str(v: unknown, path: KeyPath, def: string, re?: RegExp): string {
    if (v === undefined || v === null) return def;
    if (typeof v !== "string" && typeof v !== "number") {
      this.fail(path, "must be a string");
      return def;
    }
    const s = String(v);
    if (re && !re.test(s)) {
      this.fail(path, `invalid value ${JSON.stringify(s)}`);
      return def;
    }
    return s;
  }

  int(v: unknown, path: KeyPath, def: number, min: number, max: number): number {
    if (v === undefined || v === null) return def;
    if (typeof v !== "number" || !Number.isInteger(v)) {
      this.fail(path, "must be a whole number");
      return def;
    }
    if (v < min || v > max) {
      this.fail(path, `must be between ${min} and ${max}`);
      return def;
    }
    return v;
  }

  /** "30s", "2m", "500ms", "1h" or a number of seconds; returns ms. */
  duration(v: unknown, path: KeyPath, defMs: number, maxMs = 24 * 3600_000): number {
    if (v === undefined || v === null) return defMs;
    let ms: number;
    if (typeof v === "number" && v >= 0) ms = v * 1000;
    else if (typeof v === "string") {
      const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v.trim());
      if (!m) {
        this.fail(path, `invalid duration ${JSON.stringify(v)} (use e.g. 500ms, 30s, 2m)`);
        return defMs;
      }
      const n = Number(m[1]);
      ms = m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : m[2] === "m" ? n * 60_000 : n * 3600_000;
    } else {
      this.fail(path, "must be a duration such as 30s");
      return defMs;
    }
    ms = Math.round(ms);
    if (ms > maxMs) {
      this.fail(path, `must be at most ${maxMs / 1000}s`);
      return defMs;
    }
    return ms;
  }

  strList(v: unknown, path: KeyPath, def: readonly string[]): string[] {
    if (v === undefined || v === null) return [...def];
    if (!Array.isArray(v)) {
      this.fail(path, "must be a list");
      return [...def];
    }
    return v.map((x, i) => this.str(x, [...path, i], ""));
  }
}
