// Every module under src/ (outside the generated src/gen) opens with its
// header: at least one line of role, then the machine-checked line
// "// Imported by: anyone." | "// Imported by: src/a, src/b/c.ts." |
// "// Imported by: nothing in src (...)." This test reads every relative
// import in src/ and fails when a module is imported from outside what its
// header allows. Tests and benches may import anything.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const HEADER_LINE = /^\/\/ Imported by: (.+)\.$/;
// Static imports, re-exports, side-effect imports and import("...") type references.
const SPECIFIER = /(?:from\s+|import\s*\(\s*|import\s+)"(\.{1,2}\/[^"]+)"/g;

function modules(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir))) {
    const rel = join(dir, name);
    if (rel === join("src", "gen")) continue;
    if (statSync(join(root, rel)).isDirectory()) out.push(...modules(rel));
    else if (name.endsWith(".ts")) out.push(rel);
  }
  return out;
}

interface Header { role: string[]; allowed: "anyone" | "nothing" | string[] }

function header(file: string): Header | string {
  const lines = readFileSync(join(root, file), "utf8").split("\n");
  const comment: string[] = [];
  for (const l of lines) {
    if (!l.startsWith("//")) break;
    comment.push(l);
  }
  if (comment.length < 2) return "does not open with a header comment of at least two lines";
  const at = comment.findIndex((l) => HEADER_LINE.test(l));
  if (at < 0) return 'has no "// Imported by: ..." line in its header';
  const role = comment.slice(0, at).filter((l) => l.replace(/^\/\/\s*/, "") !== "");
  if (role.length === 0) return "has no role line before its Imported by line";
  const who = HEADER_LINE.exec(comment[at]!)![1]!;
  if (who === "anyone") return { role, allowed: "anyone" };
  if (who.startsWith("nothing in src")) return { role, allowed: "nothing" };
  const allowed = who.split(",").map((s) => s.trim());
  const bad = allowed.find((a) => !/^src\/[\w./-]+$/.test(a));
  if (bad !== undefined) return `names ${JSON.stringify(bad)}, not a src/ path, anyone, or "nothing in src"`;
  return { role, allowed };
}

function importersOf(files: string[]): Map<string, Set<string>> {
  const known = new Set(files);
  const by = new Map<string, Set<string>>(files.map((f) => [f, new Set<string>()]));
  for (const f of files) {
    for (const m of readFileSync(join(root, f), "utf8").matchAll(SPECIFIER)) {
      const target = normalize(join(dirname(f), m[1]!)).replace(/\.js$/, ".ts");
      if (known.has(target) && target !== f) by.get(target)!.add(f);
    }
  }
  return by;
}

const files = modules("src");

test("there are modules to check, and the import scan finds the well-known edges", () => {
  assert.ok(files.length > 50);
  const by = importersOf(files);
  assert.ok(by.get(join("src", "domain", "errors.ts"))!.size > 20);
  assert.ok(by.get(join("src", "daemon", "wiring.ts"))!.has(join("src", "daemon", "hsd.ts")));
});

test("every module under src/ opens with a role and a well-formed Imported by line", () => {
  const problems = files.map((f) => [f, header(f)] as const).filter(([, h]) => typeof h === "string").map(([f, h]) => `${f} ${h}`);
  assert.deepEqual(problems, []);
});

test("every module's Imported by line is true of src/", () => {
  const by = importersOf(files);
  const problems: string[] = [];
  for (const f of files) {
    const h = header(f);
    if (typeof h === "string" || h.allowed === "anyone") continue;
    for (const importer of by.get(f)!) {
      const ok = h.allowed !== "nothing" && h.allowed.some((a) => importer === a || importer.startsWith(`${a}/`));
      if (!ok) problems.push(`${f} is imported by ${importer}, which its header does not allow (${h.allowed === "nothing" ? "nothing in src" : h.allowed.join(", ")})`);
    }
  }
  assert.deepEqual(problems, []);
});
