#!/usr/bin/env node
// Runs the whole suite: every test/**/*.test.ts with node:test under tsx (two
// files at a time), then the reliability suite (test/reliability/run.mjs, one
// file at a time, with its figures summary). Ends with one closing line,
// "tests: N passed, N failed". `npm test` calls this.
// Args: optional path substrings to filter files (e.g. `node test/run-tests.mjs ssh`);
// with filters, the reliability suite runs only if a filter names it.
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { spawn } from "node:child_process";

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
const reliability = filters.length === 0 || filters.some((s) => "test/reliability/".includes(s) || s.includes("reliability") || s.endsWith(".rel.ts"));

/** Runs a command, echoing its output, and counts node:test's "# pass N" / "# fail N" lines. */
function run(args) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "inherit"] });
    let pass = 0, fail = 0, tail = "";
    p.stdout.on("data", (chunk) => {
      process.stdout.write(chunk);
      const text = tail + chunk.toString("utf8");
      const lines = text.split("\n");
      tail = lines.pop() ?? "";
      for (const l of lines) {
        // A cancelled test (a promise left pending, a timeout) failed too: it never reached its end.
        const m = /^# (pass|fail|cancelled) (\d+)$/.exec(l);
        if (m) (m[1] === "pass" ? (pass += Number(m[2])) : (fail += Number(m[2])));
      }
    });
    p.on("close", (code) => resolve({ code: code ?? 1, pass, fail }));
  });
}

let pass = 0, fail = 0, bad = false;
if (chosen.length > 0) {
  const r = await run(["--import", "tsx", "--test", "--test-concurrency=2", "--test-timeout=300000", ...chosen]);
  pass += r.pass; fail += r.fail; bad ||= r.code !== 0;
}
if (reliability) {
  const relFilters = filters.filter((s) => s.includes("reliability") || s.endsWith(".rel.ts")).map((s) => s.replace(/^.*test\/reliability\/?/, ""));
  const r = await run([join(root, "test/reliability/run.mjs"), ...relFilters.filter(Boolean)]);
  pass += r.pass; fail += r.fail; bad ||= r.code !== 0;
}
if (chosen.length === 0 && !reliability) { console.error("no test files matched"); process.exit(1); }
console.log(`\ntests: ${pass} passed, ${fail} failed`);
process.exit(bad || fail > 0 ? 1 : 0);
