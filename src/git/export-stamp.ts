// The stamp level 0 keeps in each export (upload-pack ignores it): the
// fingerprint of the checkout's status the last refresh read and what that
// refresh wrote, so a refresh of an unchanged checkout costs one status.
// Imported by: src/git.

import { createHash } from "node:crypto";
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Bump when what the snapshot depends on changes: an older stamp then never matches. */
const STAMP_VERSION = 1;
/** In the export (upload-pack ignores it): what the last refresh saw and produced. */
const STAMP_FILE = "hsd-export-stamp.json";

export interface ExportStamp { fingerprint: string; working: string; head: string; branchRef: string }

/** The stamp's fingerprint of one status read: its raw output and the lstat of every path it named. */
export function statusFingerprint(checkout: string, patterns: readonly string[], raw: string, stats: readonly string[]): string {
  return createHash("sha256").update(JSON.stringify([STAMP_VERSION, checkout, patterns, raw])).update(JSON.stringify(stats)).digest("hex");
}

/**
 * The stamp a refresh writes for `checkout` when its status is clean on
 * `branchRef` at `commit`: what checkoutStatus reads from such a checkout
 * (`git status --porcelain=v2 -z --branch` prints only the two branch
 * headers; test/git/seed-export.test.ts holds this against git's own
 * output). For an export written without reading the checkout (seed-export.ts):
 * the next refresh's status either matches it or refreshes for real.
 */
export function cleanCheckoutStamp(checkout: string, patterns: readonly string[], commit: string, branchRef: string): ExportStamp {
  const raw = `# branch.oid ${commit}\0# branch.head ${branchRef.slice("refs/heads/".length)}\0`;
  return { fingerprint: statusFingerprint(checkout, patterns, raw, []), working: commit, head: commit, branchRef };
}

/** Replaces the export's stamp whole (temp file, rename). */
export async function writeExportStamp(exp: string, stamp: ExportStamp): Promise<void> {
  const tmp = join(exp, `${STAMP_FILE}.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(stamp));
  await rename(tmp, join(exp, STAMP_FILE));
}

export async function readStamp(exp: string): Promise<ExportStamp | undefined> {
  try { return JSON.parse(await readFile(join(exp, STAMP_FILE), "utf8")) as ExportStamp; } catch { return undefined; }
}
