// Generates the demo repo set: six working checkouts shaped like the homestak
// repos, deterministic from a seed, history written with `git fast-import` so
// it takes well under a few seconds.
// Imported by: src/daemon, src/demo/demo-packs.ts.

import { mkdir, writeFile } from "node:fs/promises";
import { join, dirname } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { runGit, gitText } from "../git/run-git.js";
import { initRepo } from "../git/init-repo.js";
import { writeFileAtomic } from "../util/atomic-write.js";
import { DEMO_SITE_YAML, demoSecretsYaml, homestakShapedFiles } from "./demo-homestak-files.js";

export interface DemoOptions {
  /** PRNG seed: same seed, same commits. */
  seed?: number;
  /** Size multiplier (1 = the homestak-like sizes). */
  scale?: number;
  /** passwords.vm_root in site-config's gitignored secrets.yaml; default: random. */
  vmRootPassword?: string;
}

/** A fresh demo secret (what generateDemoRepos writes when given none). */
export function demoVmRootPassword(): string {
  return `demo-${randomBytes(9).toString("base64url")}`;
}

interface Shape { files: number; bytes: number; commits: number; dirs: string[]; ext: string[] }

const SHAPES: Record<string, Shape> = {
  bootstrap: { files: 24, bytes: 120_000, commits: 40, dirs: ["", "scripts", "lib"], ext: [".sh", ".md"] },
  ansible: { files: 60, bytes: 140_000, commits: 60, dirs: ["roles/pve/tasks", "roles/base/tasks", "playbooks", "inventory"], ext: [".yml"] },
  "iac-driver": { files: 180, bytes: 1_100_000, commits: 300, dirs: ["src", "src/actions", "src/config", "tests", "docs"], ext: [".py", ".md"] },
  tofu: { files: 40, bytes: 110_000, commits: 35, dirs: ["modules/vm", "modules/net", "envs"], ext: [".tf"] },
  packer: { files: 30, bytes: 100_000, commits: 30, dirs: ["templates", "scripts", "http"], ext: [".pkr.hcl", ".sh"] },
  // Filler stays out of specs/, postures/, presets/: homestak's resolver loads every YAML file there.
  "site-config": { files: 45, bytes: 130_000, commits: 45, dirs: ["docs", "scripts"], ext: [".md", ".sh"] },
};

export const DEMO_REPO_NAMES = Object.freeze(Object.keys(SHAPES));

/** The seed a level 0's demo set is generated from (and its prebuilt packs, demo-packs.ts). */
export const DEMO_DEFAULT_SEED = 42;

/**
 * What the default demo history depends on besides this file's code: the
 * shapes, the filler words and the fixed homestak files. Prebuilt packs
 * (demo-packs.ts) carry it and are used only while it matches; bump
 * DEMO_GENERATOR_VERSION when the generator's code changes what it writes.
 */
export function demoContentKey(): string {
  const files = DEMO_REPO_NAMES.map((n) => homestakShapedFiles(n));
  return createHash("sha256").update(JSON.stringify([DEMO_GENERATOR_VERSION, DEMO_DEFAULT_SEED, SHAPES, WORDS, files])).digest("hex");
}

const DEMO_GENERATOR_VERSION = 1;

/** Largest history first: the order to generate them in when the largest one is what everyone waits for. */
export const DEMO_REPO_NAMES_BY_SIZE = Object.freeze([...DEMO_REPO_NAMES].sort((a, b) => SHAPES[b]!.bytes * SHAPES[b]!.commits - SHAPES[a]!.bytes * SHAPES[a]!.commits));

const WORDS = (
  "name host vm node pve bridge storage snippet cloud init template clone start wait address agent " +
  "config resolver action context driver tofu apply plan module provider packer image build ansible " +
  "role task handler become when register loop item value key default secret token site env nested " +
  "level depth parent child sync repo commit branch deploy verify timeout retry network vmbr0 local"
).split(" ");

/** mulberry32: tiny, fast, good enough for reproducible filler. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function textOf(rnd: () => number, bytes: number): string {
  const lines: string[] = [];
  let n = 0;
  while (n < bytes) {
    const indent = "  ".repeat(Math.floor(rnd() * 4));
    const words: string[] = [];
    const count = 2 + Math.floor(rnd() * 8);
    for (let i = 0; i < count; i++) words.push(WORDS[Math.floor(rnd() * WORDS.length)]!);
    const line = `${indent}${words[0]}: ${words.slice(1).join("_")} ${Math.floor(rnd() * 100000)}`;
    lines.push(line);
    n += line.length + 1;
  }
  return `${lines.join("\n")}\n`;
}

/** The fast-import stream of one repo, a commit per chunk (runGit pumps it without stalling the daemon). */
function* fastImportScript(name: string, shape: Shape, seed: number, scale: number): Generator<string> {
  const rnd = prng(seed ^ [...name].reduce((h, c) => Math.imul(h, 31) + c.charCodeAt(0), 7));
  const nFiles = Math.max(3, Math.round(shape.files * scale));
  const avg = (shape.bytes * scale) / nFiles;
  const paths: string[] = [];
  for (let i = 0; i < nFiles; i++) {
    const dir = shape.dirs[i % shape.dirs.length]!;
    const ext = shape.ext[i % shape.ext.length]!;
    paths.push(`${dir ? `${dir}/` : ""}${WORDS[i % WORDS.length]}_${i}${ext}`);
  }
  const commits = Math.max(2, Math.round(shape.commits * Math.min(1, Math.max(scale, 0.05))));
  let out: string[] = [];
  const blob = (path: string, text: string) => `M 100644 inline ${path}\ndata ${Buffer.byteLength(text)}\n${text}\n`;
  const base = 1_700_000_000;
  // The first commit holds most files; the rest of history edits or adds one file at a time.
  const initial = Math.ceil(nFiles * 0.6);
  for (let c = 0; c < commits; c++) {
    if (out.length > 0) { yield out.join(""); out = []; }
    const when = base + c * 3600;
    const msg = c === 0 ? `${name}: initial import\n` : `${name}: change ${c}\n`;
    out.push(`commit refs/heads/main\nmark :${c + 1}\n`);
    out.push(`author Demo Operator <demo@homestak.invalid> ${when} +0000\n`);
    out.push(`committer Demo Operator <demo@homestak.invalid> ${when} +0000\n`);
    out.push(`data ${Buffer.byteLength(msg)}\n${msg}`);
    if (c > 0) out.push(`from :${c}\n`);
    if (c === 0) {
      for (const [path, f] of Object.entries(homestakShapedFiles(name))) out.push(`M ${f.mode} inline ${path}\ndata ${Buffer.byteLength(f.text)}\n${f.text}\n`);
      out.push(blob("README.md", `# ${name}\n\nDemo repository generated by hsd (seed ${seed}).\n`));
      for (let i = 0; i < initial; i++) {
        out.push(blob(paths[i]!, textOf(rnd, avg * (0.5 + rnd()))));
        if (i % 8 === 7) { yield out.join(""); out = []; }
      }
    } else {
      const remaining = nFiles - initial;
      const adds = Math.ceil((remaining * c) / (commits - 1)) - Math.ceil((remaining * (c - 1)) / (commits - 1));
      for (let k = 0; k < adds; k++) {
        const i = initial + Math.ceil((remaining * (c - 1)) / (commits - 1)) + k;
        if (i < nFiles) out.push(blob(paths[i]!, textOf(rnd, avg * (0.5 + rnd()))));
      }
      if (adds === 0) {
        const i = Math.floor(rnd() * initial);
        out.push(blob(paths[i]!, textOf(rnd, avg * (0.5 + rnd()))));
      }
    }
  }
  out.push("done\n");
  yield out.join("");
}

/** name -> checkout path of the demo set under `dir` (whether or not it exists yet). */
export function demoRepoPaths(dir: string): Record<string, string> {
  return Object.fromEntries(DEMO_REPO_NAMES.map((n) => [n, join(dir, n)]));
}

/** Creates one demo checkout (`name` of DEMO_REPO_NAMES) at `checkout`, which must not exist yet. */
export async function generateDemoRepo(checkout: string, name: string, opts: DemoOptions = {}): Promise<void> {
  const shape = SHAPES[name];
  if (!shape) throw new Error(`no demo repo named ${name}`);
  // Not `git init`: it copies sample hooks, and six at once on two cores cost ~100 ms.
  await initRepo(join(checkout, ".git"), { bare: false });
  await runGit(["fast-import", "--quiet", "--done"], { cwd: checkout, input: fastImportScript(name, shape, opts.seed ?? DEMO_DEFAULT_SEED, opts.scale ?? 1) });
  await runGit(["reset", "-q", "--hard", "main"], { cwd: checkout });
  await writeLevelZeroFiles(checkout, name, opts.vmRootPassword);
}

/** site-config's gitignored files of level 0, in homestak's schema (the operator's, not hsd's); nothing for the other repos. */
export async function writeLevelZeroFiles(checkout: string, name: string, vmRootPassword: string | undefined): Promise<void> {
  if (name !== "site-config") return;
  await writeFile(join(checkout, "site.yaml"), DEMO_SITE_YAML);
  // A secret like any other: temp, fsync, rename, 0600 (never half written, never briefly readable).
  await writeFileAtomic(join(checkout, "secrets.yaml"), demoSecretsYaml(vmRootPassword ?? demoVmRootPassword()), { mode: 0o600 });
}

/** Creates the six demo checkouts under `dir`; returns name -> checkout path. */
export async function generateDemoRepos(dir: string, opts: DemoOptions = {}): Promise<Record<string, string>> {
  await mkdir(dir, { recursive: true });
  const paths = demoRepoPaths(dir);
  await Promise.all(DEMO_REPO_NAMES.map((name) => generateDemoRepo(paths[name]!, name, opts)));
  return paths;
}

const IDENTITY = {
  GIT_AUTHOR_NAME: "Demo Operator", GIT_AUTHOR_EMAIL: "demo@homestak.invalid",
  GIT_COMMITTER_NAME: "Demo Operator", GIT_COMMITTER_EMAIL: "demo@homestak.invalid",
  GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1",
};

/** Writes `files` into the checkout and commits exactly them; returns the new commit id. */
export async function addCommit(checkout: string, files: Record<string, string | Uint8Array>, message = "hsd demo commit"): Promise<string> {
  const paths = Object.keys(files);
  for (const p of paths) {
    const abs = join(checkout, p);
    await mkdir(dirname(abs), { recursive: true });
    await writeFile(abs, files[p]!);
  }
  await runGit(["add", "--", ...paths], { cwd: checkout, env: IDENTITY });
  await runGit(["commit", "-q", "--no-verify", "-m", message], { cwd: checkout, env: IDENTITY });
  return gitText(["rev-parse", "HEAD"], { cwd: checkout });
}
