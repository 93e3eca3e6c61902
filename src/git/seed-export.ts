// An export written straight from a pack hsd already has (level 0's prebuilt
// demo packs), for a checkout hsd is placing from that same pack: the bare
// repo a first refresh of the clean checkout writes (the pack, its branch and
// `_working` at the commit, HEAD -> `_working`, the stamp), with no spawn and
// before the checkout exists, so a cold nest's first child never waits on it.
// Imported by: src/demo.

import { createHash } from "node:crypto";
import { copyFile, link, mkdir, readdir, readFile, rename, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import type { RepoState } from "../domain/events.js";
import { WORKING_REF, exportPath, secretMatcher } from "./export-repos.js";
import { cleanCheckoutStamp, writeExportStamp } from "./export-stamp.js";
import { initRepo } from "./init-repo.js";
import { writeLooseRef } from "./loose-refs.js";

export interface SeedExportOptions {
  exportsDir: string;
  name: string;
  /** The checkout's final path (the stamp names it, as a refresh of it would). */
  checkout: string;
  /** The checkout's branch ("refs/heads/main") and its commit, which the pack holds with all of its history. */
  branchRef: string;
  commit: string;
  /** The pack and its index (pack-<sha>.pack, .idx). */
  pack: string;
  idx: string;
  /** Every path the commit's tree holds: a clean checkout tracks exactly these. */
  files: readonly string[];
  secretPatterns: readonly string[];
}

/**
 * Writes the export, whole (built beside it, renamed into place), and returns
 * its state; undefined, with nothing written, when a refresh must decide
 * instead: the export exists already, a tracked path matches a secret pattern
 * (the refresh refuses it with its typed error), or the pack or its index
 * fails its checksum.
 */
export async function seedExport(o: SeedExportOptions): Promise<RepoState | undefined> {
  const isSecret = secretMatcher(o.secretPatterns);
  if (o.files.some(isSecret)) return undefined;
  if (!(await packIntact(o.pack, o.idx))) return undefined;
  const exp = exportPath(o.exportsDir, o.name);
  const tmp = `${exp}.${process.pid}.seed`;
  try {
    // As refreshExports makes it: the exports' directory is the level's alone.
    await mkdir(o.exportsDir, { recursive: true, mode: 0o700 });
    // A seed a killed daemon left half built (any pid): never served, only in the way.
    for (const stale of (await readdir(o.exportsDir)).filter((n) => n.startsWith(`${o.name}.git.`) && n.endsWith(".seed"))) {
      await rm(join(o.exportsDir, stale), { recursive: true, force: true });
    }
    await initRepo(tmp, { bare: true, head: WORKING_REF });
    // .pack before .idx: git sees a pack only once its index exists. Packs are
    // immutable, so a link to the build's file is a copy that costs nothing.
    for (const src of [o.pack, o.idx]) await linkOrCopy(src, `${tmp}/objects/pack/${basename(src)}`);
    await writeLooseRef(tmp, o.branchRef, o.commit);
    await writeLooseRef(tmp, WORKING_REF, o.commit);
    await writeExportStamp(tmp, cleanCheckoutStamp(o.checkout, o.secretPatterns, o.commit, o.branchRef));
    // Fails when the export exists (a refresh of an earlier start made it): that one stands.
    await rename(tmp, exp);
  } catch {
    await rm(tmp, { recursive: true, force: true });
    return undefined;
  }
  return { name: o.name, servedCommit: o.commit, worktreeCommit: "", dirty: false, dirtyFiles: [] };
}

async function linkOrCopy(src: string, dst: string): Promise<void> {
  await link(src, dst).catch(() => copyFile(src, dst));
}

/**
 * A pack's trailer is the SHA-1 of everything before it, and its index ends
 * with that pack checksum and its own: a pack damaged since the build is
 * never served.
 */
async function packIntact(pack: string, idx: string): Promise<boolean> {
  try {
    const p = await readFile(pack);
    const i = await readFile(idx);
    if (p.length < 32 || i.length < 40) return false;
    const sha1 = (b: Buffer) => createHash("sha1").update(b).digest();
    const packSum = p.subarray(p.length - 20);
    return sha1(p.subarray(0, p.length - 20)).equals(packSum)
      && i.subarray(i.length - 40, i.length - 20).equals(packSum)
      && sha1(i.subarray(0, i.length - 20)).equals(i.subarray(i.length - 20));
  } catch {
    return false;
  }
}
