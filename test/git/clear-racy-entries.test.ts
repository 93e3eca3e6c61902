// src/git/clear-racy-entries.ts on real git: the index parser against git's own
// listing, and the racy-entry clearing against git's own verdicts. Racy entries
// are made without waiting for the clock: the files' mtimes are moved 10 s back,
// git records them, and the index is stamped in that same past second.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { chmod, lutimes, mkdtemp, readFile, rm, stat, symlink, utimes, writeFile, mkdir, open } from "node:fs/promises";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clearRacyEntries, parseIndex } from "../../src/git/clear-racy-entries.js";
import { git } from "../helpers/git-fixtures.js";

const root = await mkdtemp(join(tmpdir(), "hsd-clear-racy-"));
after(() => rm(root, { recursive: true, force: true }));

let n = 0;
/** A worktree of files with names of every length up to 20 (every padding), a symlink and an executable. */
async function worktree(extra: Record<string, string> = {}): Promise<string> {
  const wt = join(root, `wt${n++}`);
  await mkdir(join(wt, "dir/sub"), { recursive: true });
  await git(["init", "-q", wt]);
  for (let len = 1; len <= 20; len++) await writeFile(join(wt, "f".repeat(len)), `content ${len}\n`.repeat(len * 50));
  await writeFile(join(wt, "dir/sub/deep.yaml"), "a: 1\n");
  await writeFile(join(wt, "run.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(wt, "run.sh"), 0o755);
  await symlink("dir/sub/deep.yaml", join(wt, "link"));
  for (const [p, c] of Object.entries(extra)) await writeFile(join(wt, p), c);
  await git(["add", "-A"], { cwd: wt });
  await git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], { cwd: wt });
  return wt;
}

const PAST = Math.floor(Date.now() / 1000) - 10;

/** Every tracked file stamped in second `sec`, recorded by git, then the index stamped in that same second: all entries racy. */
async function makeRacy(wt: string, sec = PAST): Promise<void> {
  for (const p of (await git(["ls-files"], { cwd: wt })).split("\n")) {
    await lutimes(join(wt, p), sec, sec + 0.2);
  }
  await git(["update-index", "-q", "--refresh"], { cwd: wt });
  await utimes(join(wt, ".git/index"), sec, sec + 0.5);
}

const entriesOf = async (wt: string) => parseIndex(await readFile(join(wt, ".git/index")))!;

test("the parser reads git's index as git lists it: modes, object names and names of every padding", async () => {
  const wt = await worktree();
  const entries = await entriesOf(wt);
  const listed = (await git(["ls-files", "-s"], { cwd: wt })).split("\n").map((l) => {
    const [meta, name] = l.split("\t");
    const [mode, oid] = meta!.split(" ");
    return { mode: parseInt(mode!, 8), oid, name };
  });
  assert.deepEqual(entries.map((e) => ({ mode: e.mode, oid: e.oid, name: e.name })), listed);
  const st = await stat(join(wt, "ffff"));
  const e = entries.find((x) => x.name === "ffff")!;
  assert.equal(e.size, st.size);
  assert.equal(e.ino, st.ino);
});

test("an index this does not understand is left to git: version 4, a truncated file, a conflicted entry", async () => {
  const wt = await worktree();
  const index = await readFile(join(wt, ".git/index"));
  assert.equal(parseIndex(index.subarray(0, 100)), undefined);
  const conflicted = Buffer.from(index);
  conflicted.writeUInt16BE(conflicted.readUInt16BE(12 + 60) | 0x1000, 12 + 60); // the first entry at stage 1
  assert.equal(parseIndex(conflicted), undefined);
  await git(["update-index", "--index-version", "4"], { cwd: wt });
  assert.equal(parseIndex(await readFile(join(wt, ".git/index"))), undefined);
  await makeRacy(wt);
  assert.equal(await clearRacyEntries(wt), "fallback");
});

test("racy entries that still match their blobs are cleared: git then re-checks nothing and leaves the index alone", async () => {
  const wt = await worktree();
  await makeRacy(wt);
  assert.ok((await entriesOf(wt)).every((e) => e.mtimeSec >= PAST), "every entry starts racy");
  assert.equal(await clearRacyEntries(wt), "cleared");
  const index = await stat(join(wt, ".git/index"));
  assert.ok(Math.floor(index.mtimeMs / 1000) > PAST);
  assert.equal(existsSync(join(wt, ".git/index.lock")), false);
  // status writes the index back whenever it had to re-check an entry
  assert.equal(await git(["status", "--porcelain"], { cwd: wt }), "");
  assert.equal((await stat(join(wt, ".git/index"))).mtimeMs, index.mtimeMs);
  assert.equal(await clearRacyEntries(wt), "none");
});

/** Sets one index entry's recorded ctime and rewrites the trailing checksum, as git would have written it. */
async function recordCtime(wt: string, name: string, ctimeSec: number): Promise<void> {
  const path = join(wt, ".git/index");
  const buf = await readFile(path);
  let off = 12;
  for (;;) {
    const nul = buf.indexOf(0, off + 62);
    if (buf.toString("utf8", off + 62, nul) === name) break;
    off += (62 + (nul - off - 62) + 8) & ~7;
  }
  buf.writeUInt32BE(ctimeSec, off);
  createHash("sha1").update(buf.subarray(0, buf.length - 20)).digest().copy(buf, buf.length - 20);
  const st = await stat(path);
  await writeFile(path, buf);
  await utimes(path, st.atime, st.mtime);
}

test("git's racy case: a same-size edit in the index's second, with the stat git recorded, is caught by the hash and left dirty", async () => {
  const wt = await worktree();
  await makeRacy(wt);
  const file = join(wt, "fffff");
  const before = await readFile(file);
  await writeFile(file, Buffer.from(before.toString().toUpperCase())); // same size, other bytes
  await utimes(file, PAST, PAST + 0.2);
  await recordCtime(wt, "fffff", Math.floor((await stat(file)).ctimeMs / 1000));
  const index = await stat(join(wt, ".git/index"));
  assert.equal(await clearRacyEntries(wt), "fallback");
  assert.equal((await stat(join(wt, ".git/index"))).mtimeMs, index.mtimeMs, "the index is not moved on");
  assert.equal(await git(["status", "--porcelain"], { cwd: wt }), "M fffff");
});

test("too early, busy, or where git could convert the bytes: nothing is touched", async () => {
  const wt = await worktree();
  const index = join(wt, ".git/index");
  const future = Math.floor(Date.now() / 1000) + 5; // the index's second has not ended yet
  await makeRacy(wt, future);
  const early = await stat(index);
  assert.equal(await clearRacyEntries(wt), "early");
  assert.equal((await stat(index)).mtimeMs, early.mtimeMs);

  await makeRacy(wt);
  const lock = await open(join(wt, ".git/index.lock"), "wx");
  await lock.close();
  assert.equal(await clearRacyEntries(wt), "busy");
  assert.equal(existsSync(join(wt, ".git/index.lock")), true, "git's lock is not ours to remove");
  await rm(join(wt, ".git/index.lock"));

  const attrs = await worktree({ ".gitattributes": "*.yaml text eol=crlf\n" });
  await makeRacy(attrs);
  const st = await stat(join(attrs, ".git/index"));
  assert.equal(await clearRacyEntries(attrs), "fallback");
  assert.equal((await stat(join(attrs, ".git/index"))).mtimeMs, st.mtimeMs);
});
