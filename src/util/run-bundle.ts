// Runs a program bundle (dist/<dir>/<name>.bundle.cjs, made by
// scripts/bundle-entries.mjs) with the V8 code cache the build stored beside
// it, so a start deserializes compiled code instead of parsing 3 MB of
// JavaScript (~100 ms of every hsd start; Node 20 has no compile cache of its
// own). Keep it free of other imports: it runs before anything. The build's
// scripts (bundle.mjs, warm-code-cache.mjs) take codeCacheStamp from its dist/ copy.
// Imported by: nothing in src (an entry point that bin/ or the bundled dist/ entries load).

import { isAscii } from "node:buffer";
import { readFileSync, statSync, writeFileSync, renameSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Script, constants } from "node:vm";
import { setFlagsFromString } from "node:v8";

/**
 * The cache file starts with this line naming the bundle's size and mtime: V8
 * checks a cache only against the source's length, so an edited bundle of the
 * same length would otherwise run stale code. A mismatch means no cache.
 */
export function codeCacheStamp(size: number, mtimeMs: number): string {
  return `hsd-code-cache ${size} ${Math.trunc(mtimeMs)}\n`;
}

function stamp(bundle: string): string {
  const st = statSync(bundle);
  return codeCacheStamp(st.size, st.mtimeMs);
}

function readCache(cacheFile: string, expected: string): Buffer | undefined {
  let raw: Buffer;
  try { raw = readFileSync(cacheFile); } catch { return undefined; }
  const head = Buffer.from(expected);
  return raw.subarray(0, head.length).equals(head) ? raw.subarray(head.length) : undefined;
}

/** What a program's generated entry passes to runBundle (scripts/bundle-entries.mjs). */
export interface BundleV8 {
  /** The builtins the bundle requires: loaded before `flags` are set (see setBundleFlags). */
  readonly builtins?: readonly string[];
  /** V8 flags the program runs with (src/config/node-flags.ts). */
  readonly flags?: readonly string[];
  /**
   * Which program of a bundle that holds more than one runs ("" its first):
   * hsd's bundle also runs hsctl, so a child gets one bundle and one cache
   * for both (scripts/bundle.mjs).
   */
  readonly program?: string;
}

/**
 * Sets the program's V8 flags the one way that keeps both code caches: a flag
 * set changes V8's flag hash, and V8 refuses a cache made under another hash.
 * Node's cache for its builtins was made under none, so every builtin the
 * bundle requires is loaded first; the bundle's own cache is made and read
 * after the flags are set (the build's warm run comes through here too).
 */
export function setBundleFlags(v8: BundleV8): void {
  if (!v8.flags?.length) return;
  const load = createRequire(import.meta.url);
  for (const b of v8.builtins ?? []) load(b);
  setFlagsFromString(v8.flags.join(" "));
}

/**
 * A bundle's text. bundle-entries makes every bundle ASCII, and ASCII bytes
 * read as latin1 are the same string a utf8 read makes, in a copy instead of
 * a validating decode: ~6 ms of every hsd start for its 3.9 MB. Any other
 * byte, and it is read as utf8.
 */
export function readBundleSource(filename: string): string {
  const bytes = readFileSync(filename);
  return isAscii(bytes) ? bytes.toString("latin1") : bytes.toString("utf8");
}

/**
 * The bundle compiled as one function, with its code cache when the cache
 * matches. `cacheRejected`: V8 refused the cache (it also checks the V8
 * flags: a cache written under other flags than this process has set by
 * now is rejected and the 3 MB are parsed).
 */
export function compileBundle(filename: string): { script: Script; expected: string; cacheRejected: boolean } {
  const expected = stamp(filename);
  const source = readBundleSource(filename);
  const cachedData = readCache(`${filename}.cache`, expected);
  // __hsdProgram: BundleV8.program, read by a bundle's entry that holds more than one program.
  const script = new Script(`(function (exports, require, module, __filename, __dirname, __hsdProgram) {${source}\n})`, {
    filename, ...(cachedData ? { cachedData } : {}),
    // A dynamic import() left in the bundle (of a node: builtin, say) loads as it would in a module.
    importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  return { script, expected, cacheRejected: !cachedData || script.cachedDataRejected === true };
}

/**
 * Whether this process writes its bundle's code cache when it exits:
 * HSD_WRITE_CODE_CACHE=1 (bundle-entries' warm run), or `level:<path>` and
 * this hsd is the level at that path (HSD_LEVEL_PATH, set by its parent).
 * The second is scripts/warm-code-cache.mjs's nest: of the hsds sharing one
 * cache file, only the level that was both a child and a parent writes it,
 * so the cache holds the code a nest runs, not whichever level exited last.
 */
export function writesCodeCache(env: NodeJS.ProcessEnv): boolean {
  const w = env.HSD_WRITE_CODE_CACHE;
  if (w === "1") return true;
  const level = w?.startsWith("level:") ? w.slice("level:".length) : "";
  return level !== "" && env.HSD_LEVEL_PATH === level;
}

/**
 * Evaluates the CommonJS bundle as the main program, its V8 flags set first.
 * When writesCodeCache (the build's warm runs, which set the same flags the
 * same way) the code compiled by the time the process exits is written to the cache.
 */
export function runBundle(bundleUrl: URL, v8: BundleV8 = {}): void {
  setBundleFlags(v8);
  const filename = fileURLToPath(bundleUrl);
  const cacheFile = `${filename}.cache`;
  const { script, expected } = compileBundle(filename);
  if (writesCodeCache(process.env)) {
    process.on("exit", () => {
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      writeFileSync(tmp, Buffer.concat([Buffer.from(expected), script.createCachedData()]));
      renameSync(tmp, cacheFile);
    });
  }
  const module = { exports: {} };
  const fn = script.runInThisContext() as (e: object, r: NodeJS.Require, m: object, f: string, d: string, program: string) => void;
  fn.call(module.exports, module.exports, createRequire(filename), module, filename, dirname(filename), v8.program ?? "");
}
