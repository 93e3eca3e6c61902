#!/usr/bin/env node
// Second build step (after tsc): each program (hsd, hsctl) becomes one
// CommonJS bundle built by esbuild from its TypeScript entry, plus a V8 code
// cache, and its entry file in dist/ becomes a two-line loader that runs the
// bundle with that cache (src/util/run-bundle.ts). hsd starts once per nesting
// level on the build's critical path: loading ~400 files from node_modules
// took ~0.45 s of its start, parsing the bundle without a cache ~0.1 s.
// Everything else in dist/ stays as tsc wrote it (tests import those modules).
// Usage: node scripts/bundle-entries.mjs [--dist DIR] (DIR: another tsc output
// with hsd's package.json in a directory above it; default dist/).

import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { isBuiltin } from "node:module";

const root = resolve(new URL("..", import.meta.url).pathname);
const args = process.argv.slice(2);
const dist = resolve(args.includes("--dist") ? args[args.indexOf("--dist") + 1] : join(root, "dist"));
if (!existsSync(join(dist, "util", "run-bundle.js"))) { console.error("no dist/util/run-bundle.js: run tsc first"); process.exit(1); }
const { HSD_V8_FLAGS } = await import(join(dist, "config", "node-flags.js"));

const PROGRAMS = [
  // warm: the command run once to fill the code cache: it loads every module, then exits 0.
  // flags: the V8 flags the program always runs with, written into its entry, which
  // sets them at runtime after loading the builtins the bundle requires (src/util/run-bundle.ts).
  // V8 rejects a code cache written under other flags; the warm run goes through the
  // same entry (without them every hsd start parsed the whole bundle: ~65 ms of CPU).
  // also: a second program the bundle holds, run by its own entry under the same flags and
  // cache: a child gets hsd's bundle alone and runs hsctl from it (scripts/bundle.mjs), ~30%
  // fewer bytes to copy and unpack on every level's install than with hsctl's own bundle.
  { src: "src/daemon/hsd.ts", entry: "daemon/hsd.js", bundle: "daemon/hsd.bundle.cjs", warm: ["version"], flags: HSD_V8_FLAGS,
    also: { program: "hsctl", src: "src/cli/hsctl.ts", entry: "daemon/hsctl.js" } },
  { src: "src/cli/hsctl.ts", entry: "cli/hsctl.js", bundle: "cli/hsctl.bundle.cjs", warm: ["--help"], flags: [] },
];

/**
 * One non-ASCII character (a raw U+FFFF in a dependency's regex) makes V8
 * hold the whole 3 MB source as a two-byte string, twice the memory for the
 * daemon's life. Escaped, the same code is ASCII: \uXXXX means the same
 * character in a regex, a string, a template or an identifier, and is inert
 * in a comment.
 */
function asciiOnly(file) {
  const text = readFileSync(file, "utf8");
  const out = text.replace(/[^\x00-\x7f]/gu, (c) => {
    const cp = c.codePointAt(0);
    return cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${cp.toString(16).padStart(4, "0")}`;
  });
  if (out !== text) writeFileSync(file, out);
}

/**
 * ssh2 instantiates its chacha20-poly1305 WebAssembly (a 16 MiB memory) the
 * moment it is loaded, for a cipher hsd never negotiates: its endpoint does
 * not offer it (src/ssh/ciphers.ts) and ssh2 clients list it last. In the
 * bundle that module is a stub that never instantiates; chosen anyway, the
 * stub throws and that one connection fails, never silently.
 */
const noPoly1305 = {
  name: "no-poly1305-wasm",
  setup(b) {
    b.onLoad({ filter: /ssh2[\\/]lib[\\/]protocol[\\/]crypto[\\/]poly1305\.js$/ }, () => ({
      // ssh2 awaits this before any handshake: resolve to a module whose one function refuses.
      contents: [
        "const refuse = () => { throw new Error(\"chacha20-poly1305 is not available in hsd's bundle\"); };",
        "module.exports = async () => ({ HEAPU8: new Uint8Array(16), _malloc: () => 0, cwrap: () => refuse });",
        "",
      ].join("\n"),
      loader: "js",
    }));
  },
};

/** The entry of a bundle holding two programs: `__hsdProgram` (run-bundle.ts) names the second, else the first runs. */
function programSwitch(p) {
  const rel = (src) => JSON.stringify(`./${src}`);
  return `if (__hsdProgram === ${JSON.stringify(p.also.program)}) require(${rel(p.also.src)}); else require(${rel(p.src)});\n`;
}

for (const p of PROGRAMS) {
  const bundle = join(dist, p.bundle);
  const built = await build({
    metafile: true,
    // With a second program the entry picks one at run time: run-bundle.ts passes __hsdProgram
    // (its `program`), and only the chosen program's modules are evaluated (esbuild makes a
    // require()d ES module a lazily initialised one).
    ...(p.also
      ? { stdin: { contents: programSwitch(p), resolveDir: root, sourcefile: `${p.entry.replace(/\.js$/, "")}-programs.js`, loader: "js" } }
      : { entryPoints: [join(root, p.src)] }),
    outfile: bundle,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    // Modules resolve siblings with import.meta.url; in the bundle that is the bundle's own URL (same directory as the entry).
    define: { "import.meta.url": "__hsdImportMetaUrl" },
    banner: { js: 'var __hsdImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
    // ssh2's optional native helpers: absent here, and ssh2 falls back to JS when they fail to load.
    external: ["cpu-features", "*.node"],
    // Readable stack traces from a running hsd.
    minify: false,
    keepNames: true,
    sourcemap: "linked",
    logLevel: "error",
    plugins: [noPoly1305],
  });
  asciiOnly(bundle);
  const name = p.bundle.split("/").pop();
  // The node builtins the bundle requires (esbuild leaves them external): loaded before the flags are set.
  const builtins = [...new Set(Object.values(built.metafile.outputs).flatMap((o) => o.imports)
    .filter((i) => i.external && isBuiltin(i.path)).map((i) => i.path.replace(/^node:/, "")))].sort();
  const v8 = p.flags.length > 0 ? `, ${JSON.stringify({ builtins, flags: p.flags })}` : "";
  writeFileSync(join(dist, p.entry), [
    `// Generated by scripts/bundle-entries.mjs: runs ${name} (the whole program, one file) with its V8 code cache${v8 ? " and V8 flags" : ""}.`,
    `import { runBundle } from "../util/run-bundle.js";`,
    `runBundle(new URL("./${name}", import.meta.url)${v8});`,
    "",
  ].join("\n"));
  if (p.also) {
    // Beside the bundle: the entry is found relative to it. Under the bundle's flags, or its cache is refused.
    writeFileSync(join(dist, p.also.entry), [
      `// Generated by scripts/bundle-entries.mjs: runs ${p.also.program} from ${name} (it holds both programs; what a child runs), with that bundle's code cache and V8 flags.`,
      `import { runBundle } from "../util/run-bundle.js";`,
      `runBundle(new URL("./${name}", import.meta.url), ${JSON.stringify({ builtins, flags: p.flags, program: p.also.program })});`,
      "",
    ].join("\n"));
  }
  const warm = spawnSync(process.execPath, [join(dist, p.entry), ...p.warm], {
    env: { ...process.env, HSD_WRITE_CODE_CACHE: "1" }, stdio: ["ignore", "ignore", "inherit"],
  });
  if (warm.status !== 0 || !existsSync(`${bundle}.cache`)) {
    console.error(`${p.entry} ${p.warm.join(" ")} exited ${warm.status ?? warm.signal} while writing its code cache`);
    process.exit(1);
  }
}
