// Scans a level tree for a secret value: every git object (decompressed, via
// git cat-file), every log file, every file in every working tree except the
// secrets file itself. Shared by the end-to-end and reliability tests.
import { readdir, readFile, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import { spawnSync } from "node:child_process";

async function walk(dir: string, out: string[] = []): Promise<string[]> {
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walk(p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}

function gitDirs(files: string[]): string[] {
  const dirs = new Set<string>();
  for (const f of files) {
    const m = /^(.*?\/(?:[^/]+\.git|\.git))\/(HEAD|objects\/)/.exec(f);
    if (m) dirs.add(m[1]!);
  }
  return [...dirs];
}

/** Returns every place `needle` was found (empty when clean). */
export async function scanForSecret(root: string, needle: string, opts: { allow: (path: string) => boolean }): Promise<string[]> {
  const hits: string[] = [];
  const files = await walk(root);
  for (const gd of gitDirs(files)) {
    const r = spawnSync("git", ["--git-dir", gd, "cat-file", "--batch-all-objects", "--batch", "--unordered"], { maxBuffer: 1 << 30 });
    if (r.stdout && r.stdout.includes(Buffer.from(needle))) hits.push(`git objects of ${relative(root, gd)}`);
  }
  for (const f of files) {
    if (opts.allow(f)) continue;
    if (/\/objects\/(pack|[0-9a-f]{2})\//.test(f)) continue; // compressed: covered by cat-file above
    const s = await stat(f);
    if (s.size > 64 * 1024 * 1024) continue;
    const buf = await readFile(f);
    if (buf.includes(Buffer.from(needle))) hits.push(relative(root, f));
  }
  return hits;
}
