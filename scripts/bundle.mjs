#!/usr/bin/env node
// Builds the self-contained hsd bundle a parent copies into a child level:
// dist/, bin/, package.json, the production node_modules (no network: the
// paths come from `npm ls --omit=dev`), and with --with-node this node binary.
// Usage: node scripts/bundle.mjs [--out hsd-bundle.tar.gz] [--with-node] [--dist DIR]
// (run `npm run build` first; --dist takes the compiled tree from DIR instead of dist/).

import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";

const root = resolve(new URL("..", import.meta.url).pathname);
const args = process.argv.slice(2);
const out = resolve(args.includes("--out") ? args[args.indexOf("--out") + 1] : join(root, "hsd-bundle.tar.gz"));
const withNode = args.includes("--with-node");
const dist = resolve(args.includes("--dist") ? args[args.indexOf("--dist") + 1] : join(root, "dist"));

if (!existsSync(join(dist, "daemon", "hsd.js"))) { console.error(`no ${dist}/daemon/hsd.js: run \`npm run build\` first`); process.exit(1); }
const stage = mkdtempSync(join(tmpdir(), "hsd-bundle-"));
try {
  cpSync(dist, join(stage, "dist"), { recursive: true, filter: (src) => !src.endsWith(".map") });
  for (const p of ["bin", "package.json", "daemon"]) if (existsSync(join(root, p))) cpSync(join(root, p), join(stage, p), { recursive: true });
  const ls = execFileSync("npm", ["ls", "--omit=dev", "--all", "--parseable"], { cwd: root, encoding: "utf8", maxBuffer: 64 << 20 });
  const deps = ls.split("\n").map((l) => l.trim()).filter((l) => l && l !== root && l.includes("node_modules"));
  for (const dir of deps) cpSync(dir, join(stage, relative(root, dir)), { recursive: true, dereference: true });
  if (withNode) {
    // The child may lack node >= 20; the parent's binary runs on the same arch/glibc template.
    mkdirSync(join(stage, "bin"), { recursive: true });
    cpSync(process.execPath, join(stage, "bin", "node"));
  }
  execFileSync("tar", ["-czf", out, "-C", stage, "."]);
  console.log(`${out}: ${deps.length} production packages${withNode ? ` + node ${process.version}` : ""}`);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
