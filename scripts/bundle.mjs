#!/usr/bin/env node
// Builds the self-contained hsd bundle a parent copies into a child level:
// the programs as scripts/bundle-entries.mjs made them (each one esbuild file,
// its V8 code cache and its two-line entry), bin/, package.json, daemon/, and
// with --with-node this node binary. No node_modules: the programs carry their
// dependencies, and the ~4,700 files of node_modules took a child's install
// seconds to unpack (ssh2's optional native helpers are left out, as in the
// bundles themselves: ssh2 falls back to node's crypto).
// Usage: node scripts/bundle.mjs [--out hsd-bundle.tar.gz] [--with-node] [--dist DIR]
// (run `npm run build` first; --dist takes the compiled tree from DIR instead of dist/).

import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(new URL("..", import.meta.url).pathname);
const args = process.argv.slice(2);
const out = resolve(args.includes("--out") ? args[args.indexOf("--out") + 1] : join(root, "hsd-bundle.tar.gz"));
const withNode = args.includes("--with-node");
const dist = resolve(args.includes("--dist") ? args[args.indexOf("--dist") + 1] : join(root, "dist"));

// What a child runs: each program's entry, bundle and code cache, and the loader the entries share.
const PROGRAM_FILES = [
  "daemon/hsd.js", "daemon/hsd.bundle.cjs", "daemon/hsd.bundle.cjs.cache",
  "cli/hsctl.js", "cli/hsctl.bundle.cjs", "cli/hsctl.bundle.cjs.cache",
  "util/run-bundle.js",
];
const missing = PROGRAM_FILES.filter((f) => !existsSync(join(dist, f)));
if (missing.length > 0) { console.error(`no ${missing.map((f) => `${dist}/${f}`).join(", ")}: run \`npm run build\` first`); process.exit(1); }
const stage = mkdtempSync(join(tmpdir(), "hsd-bundle-"));
try {
  for (const f of PROGRAM_FILES) cpSync(join(dist, f), join(stage, "dist", f));
  for (const p of ["bin", "package.json", "daemon"]) if (existsSync(join(root, p))) cpSync(join(root, p), join(stage, p), { recursive: true });
  if (withNode) {
    // The child may lack node >= 20; the parent's binary runs on the same arch/glibc template.
    mkdirSync(join(stage, "bin"), { recursive: true });
    cpSync(process.execPath, join(stage, "bin", "node"));
  }
  execFileSync("tar", ["-czf", out, "-C", stage, "."]);
  console.log(`${out}: hsd and hsctl${withNode ? ` + node ${process.version}` : ""}`);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
