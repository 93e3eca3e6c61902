#!/usr/bin/env node
// Second build step (after tsc): bundles each program entry point in dist/
// (daemon/hsd.js, cli/hsctl.js) with its dependencies into that same file, so
// a start loads one module instead of ~400 from node_modules. hsd starts once
// per nesting level on the build's critical path; this halves its start-up.
// Everything else in dist/ stays as tsc wrote it (tests import those modules).

import { build } from "esbuild";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

const dist = resolve(new URL("../dist", import.meta.url).pathname);
const ENTRIES = ["daemon/hsd.js", "cli/hsctl.js"];

// An ESM bundle of CommonJS packages needs require/__dirname of its own.
const banner = [
  'import { createRequire as __hsdCreateRequire } from "node:module";',
  'import { fileURLToPath as __hsdFileURLToPath } from "node:url";',
  'import { dirname as __hsdDirname } from "node:path";',
  "const require = __hsdCreateRequire(import.meta.url);",
  "const __filename = __hsdFileURLToPath(import.meta.url);",
  "const __dirname = __hsdDirname(__filename);",
].join("\n");

for (const entry of ENTRIES) {
  const file = join(dist, entry);
  if (!existsSync(file)) { console.error(`no ${file}: run tsc first`); process.exit(1); }
  await build({
    entryPoints: [file],
    outfile: file,
    allowOverwrite: true,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    banner: { js: banner },
    // ssh2's optional native helpers: absent here, and ssh2 falls back to JS when they fail to load.
    external: ["cpu-features", "*.node"],
    // Keep names and layout readable: stack traces from a running hsd must make sense.
    minify: false,
    keepNames: true,
    sourcemap: "linked",
    logLevel: "warning",
  });
}
