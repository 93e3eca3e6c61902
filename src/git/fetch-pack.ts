// An incremental fetch into an export that already mirrors its parent, in one
// round trip and without isomorphic-git's fetch: the wants are the advertised
// tips the export does not hold, the haves its own tips (every object they
// reach is here), sent at once with "done". The pack comes back through the
// session's divert (a large one goes to git index-pack), a small one is
// indexed here by isomorphic-git's public indexPack, and only then are the
// export's refs made to mirror the advertisement.
// Imported by: src/git.

import * as fs from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import git from "isomorphic-git";
import { GitProtocolError } from "../domain/errors.js";
import type { ExportRefs } from "../domain/level-api.js";
import { FLUSH_PKT, PktStreamReader, encodePktLine, type RefAdvertisement } from "./pkt-line.js";
import { advertisedExportRefs } from "./export-refs.js";
import { deleteLooseRefSync, looseRefs, writeLooseRefSync } from "./loose-refs.js";
import { indexSmallPack } from "./small-pack-index.js";
import type { FetchSession } from "./ssh-http-plugin.js";

/** The remote isomorphic-git's fetch fetches from, and keeps tracking refs for (refs/remotes/<it>/). */
export const FETCH_REMOTE = "origin";

/** An export's refs as loose files: heads, tags and HEAD's branch. */
export interface LocalRefs {
  readonly head: string | undefined;
  readonly heads: ReadonlyMap<string, string>;
  readonly tags: ReadonlyMap<string, string>;
  /** True when isomorphic-git's remote-tracking refs are there (refs/remotes/origin). */
  readonly tracking: boolean;
}

/** Capabilities this fetch needs from upload-pack; without one of them the caller fetches the usual way. */
const NEEDED = ["side-band-64k", "ofs-delta"] as const;

/** The export's refs, or undefined when they are not all loose files (packed-refs: the caller fetches the usual way). */
export async function readLocalRefs(gitdir: string): Promise<LocalRefs | undefined> {
  const [headText, heads, tags] = await Promise.all([
    readFile(join(gitdir, "HEAD"), "utf8").catch(() => ""),
    looseRefs(gitdir, "refs/heads/"), looseRefs(gitdir, "refs/tags/"),
  ]);
  if (!heads || !tags) return undefined;
  return { head: /^ref: (refs\/heads\/\S+)$/.exec(headText.trim())?.[1], heads, tags, tracking: fs.existsSync(join(gitdir, "refs", "remotes", FETCH_REMOTE)) };
}

/** What the export serves, as readExportRefs (export-refs.ts) reads it: undefined unless HEAD names a branch it has. */
export function servedRefs(local: LocalRefs): ExportRefs | undefined {
  return local.head && local.heads.has(local.head) ? { head: local.head, refs: Object.fromEntries([...local.heads, ...local.tags]) } : undefined;
}

/** True when this advertisement can be fetched by fetchPack (a HEAD branch it serves, and the capabilities it asks for). */
export function canFetchPack(ad: RefAdvertisement): boolean {
  const told = advertisedExportRefs(ad);
  return told?.refs[told.head] !== undefined && NEEDED.every((c) => ad.capabilities.includes(c));
}

/** The upload-pack request: every want (capabilities on the first), a flush, every have, done. */
export function packRequest(wants: readonly string[], haves: readonly string[], serverCaps: readonly string[]): Buffer {
  const caps = [...NEEDED, ...(serverCaps.includes("no-progress") ? ["no-progress"] : []), "agent=hsd"];
  return Buffer.concat([
    ...wants.map((w, i) => encodePktLine(`want ${w}${i === 0 ? ` ${caps.join(" ")}` : ""}\n`)),
    FLUSH_PKT,
    ...haves.map((h) => encodePktLine(`have ${h}\n`)),
    encodePktLine("done\n"),
  ]);
}

/**
 * Fetches what `ad` serves beyond `local` into the export at `gitdir` over
 * the session whose advertisement `ad` is, then mirrors the advertised heads,
 * tags and HEAD branch. Returns the commit HEAD
 * serves. A failure before the objects are in leaves every ref as it was.
 */
export async function fetchPack(o: {
  session: FetchSession; url: string; gitdir: string; ad: RefAdvertisement; local: LocalRefs; repo: string;
}): Promise<{ head: string }> {
  const told = advertisedExportRefs(o.ad)!;
  const have = new Set([...o.local.heads.values(), ...o.local.tags.values()]);
  const wants = [...new Set(Object.values(told.refs))].filter((oid) => !have.has(oid));
  if (wants.length === 0) {
    await o.session.nothingWanted();
  } else {
    const request = packRequest(wants, [...have], o.ad.capabilities);
    const res = await o.session.http.request({
      url: `${o.url}/git-upload-pack`, method: "POST", headers: {},
      body: (async function* () { yield request; })(),
    });
    await storePack(o.gitdir, await readPack(res.body!, o.repo), o.repo);
  }
  mirrorRefs(o.gitdir, told, o.local);
  return { head: told.refs[told.head]! };
}

/**
 * The pack's bytes from the response: ACK/NAK lines, then side-band 1 (pack),
 * 2 (progress, dropped) and 3 (the server's error). The divert upstream has
 * already sent a large pack to index-pack and passes an empty one in its
 * place, so what is held here stays under its bound.
 */
async function readPack(body: AsyncIterableIterator<Uint8Array>, repo: string): Promise<Buffer> {
  const reader = new PktStreamReader(async () => {
    const r = await body.next();
    return r.done ? undefined : Buffer.from(r.value);
  });
  const pack: Buffer[] = [];
  try {
    for (let r = await reader.read(); r; r = await reader.read()) {
      const p = r.pkt;
      if (p.type === "flush") break;
      if (p.type !== "data" || p.payload.length === 0) continue;
      const band = p.payload[0]!;
      if (band === 1) pack.push(p.payload.subarray(1));
      else if (band === 3) {
        throw new GitProtocolError(`upload-pack for ${repo} failed: ${p.payload.subarray(1).toString("utf8").trim().slice(0, 200)}`, { details: { repo } });
      } else if (band !== 2) {
        const line = p.payload.toString("utf8");
        if (line.startsWith("ERR ")) throw new GitProtocolError(`upload-pack for ${repo} refused: ${line.slice(4).trim().slice(0, 200)}`, { details: { repo } });
        if (!line.startsWith("ACK ") && !line.startsWith("NAK")) throw new GitProtocolError(`unexpected line in the upload-pack response for ${repo}`, { details: { repo } });
      }
    }
    // The session's body ends only after the channel closed with status 0 (else it throws the remote's error).
    for (let r = await body.next(); !r.done; r = await body.next()) { /* drained: nothing follows the flush */ }
  } finally {
    // Stopped early: the divert's index-pack, if it had one, is stopped and its temporary files removed.
    await body.return?.();
  }
  return Buffer.concat(pack);
}

/**
 * Checks the pack and puts it, with its index, into objects/pack: both
 * renamed in, the .idx last (git ignores a pack without one). Synchronous
 * file calls on purpose: a few syscalls on a small pack, where each awaited
 * one would queue behind the sync's other file work on libuv's threadpool.
 */
async function storePack(gitdir: string, pack: Buffer, repo: string): Promise<void> {
  if (pack.length < 32 || pack.subarray(0, 4).toString("latin1") !== "PACK") {
    throw new GitProtocolError(`upload-pack sent no pack for ${repo}`, { details: { repo } });
  }
  const trailer = pack.subarray(pack.length - 20);
  if (!createHash("sha1").update(pack.subarray(0, pack.length - 20)).digest().equals(trailer)) {
    throw new GitProtocolError(`the pack for ${repo} is corrupt (checksum mismatch)`, { details: { repo } });
  }
  if (pack.readUInt32BE(8) === 0) return;
  const name = `pack-${trailer.toString("hex")}`;
  const packDir = join(gitdir, "objects", "pack");
  if (fs.existsSync(join(packDir, `${name}.idx`))) return;
  let indexed;
  try {
    indexed = indexSmallPack(pack);
  } catch (err) {
    throw new GitProtocolError(`the pack for ${repo} is malformed`, { details: { repo }, cause: err });
  }
  // Outside objects/pack while being written: nothing there ever names a half-written file.
  const tmp = join(gitdir, `incoming-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    fs.writeFileSync(`${tmp}.pack`, pack);
    // A pack this indexer declines (a delta on an object outside it) goes to isomorphic-git's, which reads such bases from the store.
    if (indexed) fs.writeFileSync(`${tmp}.idx`, indexed.idx);
    else await git.indexPack({ fs, dir: gitdir, gitdir, filepath: basename(`${tmp}.pack`) });
    fs.renameSync(`${tmp}.pack`, join(packDir, `${name}.pack`));
    fs.renameSync(`${tmp}.idx`, join(packDir, `${name}.idx`));
  } catch (err) {
    fs.rmSync(`${tmp}.pack`, { force: true });
    fs.rmSync(`${tmp}.idx`, { force: true });
    throw new GitProtocolError(`could not store the pack for ${repo}: ${(err as Error).message}`, { details: { repo }, cause: err });
  }
}

/**
 * Heads, tags and HEAD as advertised: deletions first (a gone "a" makes room
 * for "a/b", and a gone "a/b" for "a"); each ref replaced atomically. The
 * remote-tracking copies isomorphic-git's fetch keeps (it made the export's
 * first refs before this path existed, and still fetches into an export
 * with packed refs) go: this path needs none, and each new ref file costs an
 * inode allocation. Synchronous for the reason storePack gives.
 */
function mirrorRefs(gitdir: string, told: { head: string; refs: Record<string, string> }, local: LocalRefs): void {
  const have = new Map([...local.heads, ...local.tags]);
  for (const ref of have.keys()) if (!(ref in told.refs)) deleteLooseRefSync(gitdir, ref);
  if (local.tracking) fs.rmSync(join(gitdir, "refs", "remotes", FETCH_REMOTE), { recursive: true, force: true });
  for (const [ref, oid] of Object.entries(told.refs)) if (have.get(ref) !== oid) writeLooseRefSync(gitdir, ref, oid);
  if (local.head !== told.head) writeLooseRefSync(gitdir, "HEAD", `ref: ${told.head}`);
}
