#!/usr/bin/env node
// Builds the self-contained hsd bundle a parent copies into a child level:
// hsd's bundle as scripts/bundle-entries.mjs made it (one esbuild file holding hsd
// and hsctl, its V8 code cache, stamped for the unpacked file, and an entry for
// each program), bin/, package.json, daemon/, and
// with --with-node this node binary. No node_modules: the programs carry their
// dependencies, and the ~4,700 files of node_modules took a child's install
// seconds to unpack (ssh2's optional native helpers are left out, as in the
// bundles themselves: ssh2 falls back to node's crypto).
// Usage: node scripts/bundle.mjs [--out hsd-bundle.tar.gz] [--with-node] [--dist DIR]
// (run `npm run build` first; --dist takes the compiled tree from DIR instead of dist/).

import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, rmSync, mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(new URL("..", import.meta.url).pathname);
const args = process.argv.slice(2);
const out = resolve(args.includes("--out") ? args[args.indexOf("--out") + 1] : join(root, "hsd-bundle.tar.gz"));
const withNode = args.includes("--with-node");
const dist = resolve(args.includes("--dist") ? args[args.indexOf("--dist") + 1] : join(root, "dist"));

// What a child runs: hsd's bundle and code cache, the entries that run hsd and hsctl from it
// (bundle-entries.mjs: one bundle holds both), and the loader the entries share. hsctl's
// own bundle stays behind: ~30% of the bytes every level's install copies and unpacks.
const PROGRAM_FILES = [
  "daemon/hsd.js", "daemon/hsctl.js", "daemon/hsd.bundle.cjs", "daemon/hsd.bundle.cjs.cache",
  "util/run-bundle.js",
];
/** The child's bin/hsctl.js (in place of the package's, which runs hsctl's own bundle). */
const CHILD_HSCTL = [
  "#!/usr/bin/env node",
  "// Installed entry point of the hsctl CLI on a child: hsctl run from hsd's bundle (scripts/bundle.mjs).",
  'import "../dist/daemon/hsctl.js";',
  "",
].join("\n");
const missing = PROGRAM_FILES.filter((f) => !existsSync(join(dist, f)));
if (missing.length > 0) { console.error(`no ${missing.map((f) => `${dist}/${f}`).join(", ")}: run \`npm run build\` first`); process.exit(1); }
/** src/util/run-bundle.ts's first line of a code cache: the bundle's size and mtime it was made for. */
// The code cache's first line, as the program checks it (src/util/run-bundle.ts).
const { codeCacheStamp: stampOf } = await import(join(dist, "util", "run-bundle.js"));

/**
 * A program's bundle and code cache as the child will find them. tar keeps whole
 * seconds of an mtime, and a copy gets a new one: the cache's stamp would name
 * another mtime than the unpacked bundle's, and every child hsd would parse its
 * 3 MB bundle again. So the staged bundle gets its whole-second mtime and the
 * cache a stamp for it; the cache must match the built bundle to begin with.
 */
function stageProgram(bundleRel) {
  const bundle = join(dist, bundleRel);
  const st = statSync(bundle);
  const cache = readFileSync(`${bundle}.cache`);
  const head = Buffer.from(stampOf(st.size, st.mtimeMs));
  if (!cache.subarray(0, head.length).equals(head)) { console.error(`${bundle}.cache is not this bundle's code cache: run \`npm run build\``); process.exit(1); }
  const seconds = Math.floor(st.mtimeMs / 1000);
  utimesSync(join(stage, "dist", bundleRel), seconds, seconds);
  writeFileSync(join(stage, "dist", `${bundleRel}.cache`), Buffer.concat([Buffer.from(stampOf(st.size, seconds * 1000)), cache.subarray(head.length)]));
}

const stage = mkdtempSync(join(tmpdir(), "hsd-bundle-"));
try {
  for (const f of PROGRAM_FILES) cpSync(join(dist, f), join(stage, "dist", f));
  for (const f of PROGRAM_FILES.filter((x) => x.endsWith(".bundle.cjs"))) stageProgram(f);
  for (const p of ["bin", "package.json", "daemon"]) if (existsSync(join(root, p))) cpSync(join(root, p), join(stage, p), { recursive: true });
  writeFileSync(join(stage, "bin", "hsctl.js"), CHILD_HSCTL, { mode: 0o755 });
  if (withNode) {
    // The child may lack node >= 20; the parent's binary runs on the same arch/glibc template.
    mkdirSync(join(stage, "bin"), { recursive: true });
    cpSync(process.execPath, join(stage, "bin", "node"));
  }
  execFileSync("tar", ["-czf", out, "-C", stage, "."]);
  console.log(`${out}: hsd and hsctl (one bundle)${withNode ? ` + node ${process.version}` : ""}`);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
