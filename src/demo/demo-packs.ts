// Level 0's demo set from packs `npm run build` prebuilt (scripts/demo-packs.mjs):
// the very commits generateDemoRepo writes with the default seed, placed as a
// pack, a branch ref and a checkout instead of being generated on the
// daemon's thread and through fast-import while a first nest waits for them.
// Without matching prebuilt packs it generates, as before. Each repo's export
// can be written from its pack ahead of the checkout (seedDemoExport).
// Imported by: src/daemon.

import { copyFile, mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { DEMO_REPO_NAMES, demoContentKey, generateDemoRepo, writeLevelZeroFiles } from "./demo-repos.js";
import { initRepo } from "../git/init-repo.js";
import { gitList, gitText, runGit } from "../git/run-git.js";
import { seedExport } from "../git/seed-export.js";
import type { RepoState } from "../domain/events.js";
import { packageRoot } from "../util/package-root.js";

interface PackManifest {
  /** demoContentKey() of the generator that wrote the packs. */
  readonly key: string;
  /** name -> the branch tip, the pack's base name (pack-<sha>) and every path of the tip's tree. */
  readonly repos: Readonly<Record<string, { readonly commit: string; readonly pack: string; readonly files?: readonly string[] }>>;
}

const MANIFEST = "manifest.json";

/** Where the build puts them: dist/demo/packs of hsd's package. */
export function defaultDemoPacksDir(): string {
  return join(packageRoot(), "dist", "demo", "packs");
}

/**
 * Generates each demo repo (default seed) in a temp dir and keeps its one
 * pack and the tip of main under `outDir`, replaced whole (by rename) so a
 * reader never sees half a set. Build time only.
 */
export async function buildDemoPacks(outDir: string): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "hsd-demo-packs-"));
  const staged = `${outDir}.${process.pid}.tmp`;
  try {
    await rm(staged, { recursive: true, force: true });
    await mkdir(staged, { recursive: true });
    const repos: Record<string, { commit: string; pack: string; files: string[] }> = {};
    for (const name of DEMO_REPO_NAMES) {
      const checkout = join(work, name);
      // Only the committed history is kept: the gitignored level-0 files get a throwaway secret.
      await generateDemoRepo(checkout, name, { vmRootPassword: "build-time-only" });
      const packDir = join(checkout, ".git", "objects", "pack");
      const packs = (await readdir(packDir)).filter((f) => f.endsWith(".pack"));
      if (packs.length !== 1) throw new Error(`demo repo ${name}: expected one pack from fast-import, found ${packs.length}`);
      const pack = packs[0]!.slice(0, -".pack".length);
      await mkdir(join(staged, name));
      for (const ext of [".pack", ".idx"]) await copyFile(join(packDir, `${pack}${ext}`), join(staged, name, `${pack}${ext}`));
      repos[name] = {
        commit: await gitText(["rev-parse", "refs/heads/main"], { cwd: checkout }), pack,
        files: await gitList(["ls-tree", "-r", "-z", "--name-only", "refs/heads/main"], { cwd: checkout }),
      };
    }
    const manifest: PackManifest = { key: demoContentKey(), repos };
    await writeFile(join(staged, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    await rm(outDir, { recursive: true, force: true });
    await rename(staged, outDir);
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(staged, { recursive: true, force: true });
  }
}

/** dist/demo/packs, or undefined where hsd runs without its package around it (then nothing is prebuilt). */
function packsOfThisBuild(): string | undefined {
  try { return defaultDemoPacksDir(); } catch { return undefined; }
}

async function readManifest(packsDir: string): Promise<PackManifest | undefined> {
  try {
    const m = JSON.parse(await readFile(join(packsDir, MANIFEST), "utf8")) as PackManifest;
    return m.key === demoContentKey() ? m : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Creates demo repo `name` at `checkout` (which must not exist yet), as
 * generateDemoRepo does with the default seed. From its prebuilt pack when
 * the build left one for this generator: one spawn (the checkout) instead
 * of fast-import fed by ~100 ms of text generation on this thread. A pack
 * that does not check out (damaged, missing objects) falls back to generating.
 */
export async function placeDemoRepo(
  checkout: string, name: string, opts: { vmRootPassword?: string; packsDir?: string; niceness?: number } = {},
): Promise<"prebuilt" | "generated"> {
  const generate = async () => {
    await generateDemoRepo(checkout, name, opts.vmRootPassword !== undefined ? { vmRootPassword: opts.vmRootPassword } : {});
    return "generated" as const;
  };
  const packsDir = opts.packsDir ?? packsOfThisBuild();
  const entry = packsDir ? (await readManifest(packsDir))?.repos[name] : undefined;
  if (!packsDir || !entry) return generate();
  const src = join(packsDir, name, entry.pack);
  const gitDir = join(checkout, ".git");
  try {
    await initRepo(gitDir, { bare: false });
    // .pack before .idx: git sees a pack only once its index exists.
    for (const ext of [".pack", ".idx"]) await copyFile(src + ext, join(gitDir, "objects", "pack", `${entry.pack}${ext}`));
    await writeFile(join(gitDir, "refs", "heads", "main"), `${entry.commit}\n`);
    // Checks the commit out; fails if the pack does not hold it whole.
    await runGit(["reset", "-q", "--hard", "main"], { cwd: checkout, ...(opts.niceness !== undefined ? { niceness: opts.niceness } : {}) });
  } catch {
    await rm(checkout, { recursive: true, force: true });
    return generate();
  }
  await writeLevelZeroFiles(checkout, name, opts.vmRootPassword);
  return "prebuilt";
}

/**
 * Writes demo repo `name`'s export at level 0 straight from its prebuilt
 * pack, before its checkout (placed from the same pack) exists: what a first
 * refresh of that checkout, clean on main, writes (seed-export.ts).
 * Undefined, with nothing written, when there is no current pack for it
 * (then the checkout is generated and refreshed as before) or the seed
 * declines (an export already there, a secret pattern, a damaged pack).
 */
export async function seedDemoExport(name: string, o: {
  checkout: string; exportsDir: string; secretPatterns: readonly string[]; packsDir?: string;
}): Promise<RepoState | undefined> {
  const packsDir = o.packsDir ?? packsOfThisBuild();
  const entry = packsDir ? (await readManifest(packsDir))?.repos[name] : undefined;
  if (!packsDir || !entry?.files) return undefined;
  const src = join(packsDir, name, entry.pack);
  return seedExport({
    exportsDir: o.exportsDir, name, checkout: o.checkout, branchRef: "refs/heads/main", commit: entry.commit,
    pack: `${src}.pack`, idx: `${src}.idx`, files: entry.files, secretPatterns: o.secretPatterns,
  });
}
