// What an export serves a fetcher, read from its refs: HEAD's branch and every
// head and tag, as upload-pack advertises them (hideRefs keeps the rest). A
// parent reads its own to send with a sync request; the child reads its export
// the same way and skips the repo when the two are equal.
// Imported by: src/git, src/level.

import * as fs from "node:fs";
import { join } from "node:path";
import git from "isomorphic-git";
import type { ExportRefs } from "../domain/level-api.js";
import type { RefAdvertisement } from "./pkt-line.js";
import { looseRefs } from "./loose-refs.js";

/** Every ref naming an object under the prefixes (symbolic ones left out): from the files, or isomorphic-git when there is packed-refs. */
export async function refsUnder(gitdir: string, prefixes: readonly string[]): Promise<Map<string, string>> {
  const refs = new Map<string, string>();
  for (const prefix of prefixes) {
    const loose = await looseRefs(gitdir, prefix);
    if (loose) { for (const [k, v] of loose) refs.set(k, v); continue; }
    const names = prefix === "refs/tags/" ? await git.listTags({ fs, gitdir })
      : prefix === "refs/heads/" ? await git.listBranches({ fs, gitdir })
      : await git.listBranches({ fs, gitdir, remote: prefix.slice("refs/remotes/".length, -1) });
    for (const n of names) {
      if (n === "HEAD" && prefix.startsWith("refs/remotes/")) continue;
      refs.set(`${prefix}${n}`, await git.resolveRef({ fs, gitdir, ref: `${prefix}${n}` }));
    }
  }
  return refs;
}

/**
 * The export's served refs; undefined when it serves no branch as HEAD (no
 * repo yet, a detached or dangling HEAD): upload-pack then advertises no HEAD
 * symref, and such a repo is always fetched.
 */
export async function readExportRefs(gitdir: string): Promise<ExportRefs | undefined> {
  try {
    const head = /^ref: (refs\/heads\/\S+)$/.exec((await fs.promises.readFile(join(gitdir, "HEAD"), "utf8")).trim())?.[1];
    if (!head) return undefined;
    const refs = await refsUnder(gitdir, ["refs/heads/", "refs/tags/"]);
    return refs.has(head) ? { head, refs: Object.fromEntries(refs) } : undefined;
  } catch {
    return undefined;
  }
}

/** The same view of a parent's advertisement (peeled tags and HEAD itself left out); undefined without a HEAD symref. */
export function advertisedExportRefs(ad: RefAdvertisement): ExportRefs | undefined {
  const head = ad.capabilities.find((c) => c.startsWith("symref=HEAD:"))?.slice("symref=HEAD:".length);
  if (!head) return undefined;
  const refs: Record<string, string> = {};
  for (const r of ad.refs) {
    if (r.name === "HEAD" || r.name.endsWith("^{}")) continue;
    refs[r.name] = r.oid;
  }
  return { head, refs };
}

/** Exactly the same HEAD branch and the same refs at the same objects. */
export function sameExportRefs(a: ExportRefs | undefined, b: ExportRefs | undefined): boolean {
  if (!a || !b || a.head !== b.head) return false;
  const ka = Object.keys(a.refs);
  if (ka.length !== Object.keys(b.refs).length) return false;
  return ka.every((k) => b.refs[k] === a.refs[k]);
}
