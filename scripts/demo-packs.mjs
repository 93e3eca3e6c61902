#!/usr/bin/env node
// Third build step (after tsc and bundle-entries): prebuilds level 0's demo
// set as packs under dist/demo/packs (src/demo/demo-packs.ts), so a level 0
// with no repos places them instead of generating ~1,800 commits' worth of
// history while its first nest waits. Usage: node scripts/demo-packs.mjs [--dist DIR]

import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(new URL("..", import.meta.url).pathname);
const args = process.argv.slice(2);
const dist = resolve(args.includes("--dist") ? args[args.indexOf("--dist") + 1] : join(root, "dist"));
const mod = join(dist, "demo", "demo-packs.js");
if (!existsSync(mod)) { console.error(`no ${mod}: run tsc first`); process.exit(1); }
const { buildDemoPacks } = await import(mod);
await buildDemoPacks(join(dist, "demo", "packs"));
