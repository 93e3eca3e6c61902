#!/usr/bin/env node
// Runs the reliability suite (test/reliability/**/*.rel.ts) with node:test
// under tsx, one file at a time (2 cores; real processes), then prints one
// summary of the figures the tests recorded. `npm run test:reliability`.
// Env: HSD_RELIABILITY_CASES (fuzz cases per target; CI default small),
// HSD_RELIABILITY_LONG=1 (long run), HSD_RELIABILITY_SEED, and path filters as args.
import { readdirSync, statSync, readFileSync, mkdtempSync, rmSync } from "node:fs";
import { join, relative } from "node:path";
import { tmpdir } from "node:os";
import { spawnSync } from "node:child_process";

const repo = new URL("../..", import.meta.url).pathname;
const here = new URL(".", import.meta.url).pathname;
const files = [];
(function walk(dir) {
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (n.endsWith(".rel.ts")) files.push(relative(repo, p));
  }
})(here);
const filters = process.argv.slice(2);
const chosen = files.sort().filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
const tmp = mkdtempSync(join(tmpdir(), "hsd-rel-figures-"));
const figuresFile = join(tmp, "figures.jsonl");
const r = spawnSync(process.execPath, [
  "--import", "tsx", "--test", "--test-concurrency=1", "--test-timeout=1500000", ...chosen,
], { stdio: "inherit", cwd: repo, env: { ...process.env, HSD_RELIABILITY_FIGURES: figuresFile } });

let figs = [];
try { figs = readFileSync(figuresFile, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)); } catch { /* none */ }
rmSync(tmp, { recursive: true, force: true });
const get = (prefix) => figs.filter((f) => f.key.startsWith(prefix));
const line = (label, v) => console.log(`  ${label.padEnd(34)} ${v}`);
console.log("\n== hsd reliability summary ==");
for (const f of get("kill.l2.")) line(`kill l2 in ${f.key.slice(8)}`, f.value);
for (const f of get("kill.l0.")) line(f.key, `${f.value}${f.note ? ` (${f.note})` : ""}`);
for (const f of get("partition.")) line(f.key, f.value);
for (const f of get("load.")) line(f.key, `${f.value}${f.note ? ` (${f.note})` : ""}`);
const fuzz = get("fuzz.").filter((f) => f.key.endsWith(".cases"));
line("fuzz cases run", `${fuzz.reduce((s, f) => s + Number(f.value), 0)} (${fuzz.map((f) => `${f.key.slice(5, -6)} ${f.value}`).join(", ")})`);
for (const f of get("fuzz.grpc.rss")) line(f.key, f.value);
for (const f of get("ssh.")) line(f.key, `${f.value}${f.note ? ` (${f.note})` : ""}`);
for (const f of get("files.")) line(f.key, `${f.value}${f.note ? ` (${f.note})` : ""}`);
line("canary hits (must be 0)", get("canary.hits").map((f) => f.value).join(", ") || "not run");
line("torn files (must be 0)", get("files.torn").map((f) => f.value).join(", ") || "not run");
process.exit(r.status ?? 1);
