#!/usr/bin/env node
// Runs every test/**/*.test.ts with node:test under tsx. `npm test` calls this.
// Args: optional path substrings to filter files (e.g. `node test/run-tests.mjs ssh`).
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { spawnSync } from "node:child_process";

const root = new URL("..", import.meta.url).pathname;
const filters = process.argv.slice(2);
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) { if (name !== "node_modules" && name !== "fixtures") walk(p); }
    else if (name.endsWith(".test.ts")) files.push(relative(root, p));
  }
})(join(root, "test"));
const chosen = files.sort().filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
if (chosen.length === 0) { console.error("no test files matched"); process.exit(1); }
const r = spawnSync(process.execPath, [
  "--import", "tsx", "--test", "--test-concurrency=2", "--test-timeout=300000", ...chosen,
], { stdio: "inherit", cwd: root });
process.exit(r.status ?? 1);
