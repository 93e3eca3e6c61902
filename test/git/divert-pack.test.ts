// divertPack on real packs framed as upload-pack responses: a large pack ends
// up indexed in the target repo and isomorphic-git gets an empty pack with
// every other packet intact, whatever the chunk boundaries; a small pack
// passes through byte for byte; a bad pack fails typed and leaves no files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { readdir, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tempDir, git, cleanEnv } from "../helpers/git-fixtures.js";
import { divertPack, EMPTY_PACK, type DivertStats } from "../../src/git/divert-pack.js";
import { encodePktLine, parsePktLines, FLUSH_PKT } from "../../src/git/pkt-line.js";
import { initRepo } from "../../src/git/init-repo.js";
import { isFreshWorktree, prepareWorktree } from "../../src/git/worktree-checkout.js";
import { silentLogger } from "../../src/log/logger.js";
import { HsError } from "../../src/domain/errors.js";

/** A repo with `files` files in one commit; returns its path and the full pack of HEAD. */
async function packOf(dir: string, files: number): Promise<{ repo: string; pack: Buffer; head: string }> {
  const repo = join(dir, `src-${files}`);
  await mkdir(join(repo, "d"), { recursive: true });
  await git(["init", "-q", repo]);
  for (let i = 0; i < files; i++) await writeFile(join(repo, "d", `f${i}.txt`), `file ${i}\n${"x".repeat(i * 37)}\n`);
  await git(["add", "-A"], { cwd: repo });
  await git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c"], { cwd: repo });
  const head = await git(["rev-parse", "HEAD"], { cwd: repo });
  const pack = execFileSync("git", ["pack-objects", "--revs", "--stdout", "-q"], { cwd: repo, input: `${head}\n`, env: cleanEnv(), maxBuffer: 1 << 28 });
  return { repo, pack, head };
}

/** NAK, side-band packets (pack in `packSize` pieces, progress in between), flush: what upload-pack sends. */
function response(pack: Buffer, packSize: number): Buffer {
  const out: Buffer[] = [encodePktLine("NAK\n"), encodePktLine(Buffer.from("\x02Enumerating objects: 5, done.\n"))];
  for (let i = 0, n = 0; i < pack.length; i += packSize, n++) {
    out.push(encodePktLine(Buffer.concat([Buffer.from([1]), pack.subarray(i, i + packSize)])));
    if (n % 3 === 1) out.push(encodePktLine(Buffer.from(`\x02Receiving ${n}\r`)));
  }
  out.push(FLUSH_PKT);
  return Buffer.concat(out);
}

async function* chunked(buf: Buffer, sizes: number[]): AsyncGenerator<Buffer> {
  for (let i = 0, k = 0; i < buf.length; k++) {
    const n = sizes[k % sizes.length]!;
    yield buf.subarray(i, i + n);
    i += n;
  }
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of gen) parts.push(b);
  return Buffer.concat(parts);
}

/** The response with side-band 1 reassembled into one pack, for comparing what isomorphic-git would read. */
function demux(buf: Buffer): { other: string[]; pack: Buffer } {
  const other: string[] = [];
  const pack: Buffer[] = [];
  for (const p of parsePktLines(buf)) {
    if (p.type !== "data") { other.push(p.type); continue; }
    if (p.payload[0] === 1) pack.push(p.payload.subarray(1));
    else other.push(p.payload.toString("latin1"));
  }
  return { other, pack: Buffer.concat(pack) };
}

test("a large pack goes to index-pack under any chunking; isomorphic-git sees the same packets and an empty pack", async () => {
  const t = await tempDir();
  try {
    const { pack, head } = await packOf(t.path, 150);
    const objects = pack.readUInt32BE(8);
    assert.ok(objects >= 150);
    const res = response(pack, 1000);
    for (const [i, sizes] of [[1], [7, 3], [4096], [65536], [res.length]].entries()) {
      const gitdir = join(t.path, `dst-${i}.git`);
      await initRepo(gitdir, { bare: true });
      const stats: DivertStats = { diverted: false, objects: 0 };
      const out = await collect(divertPack(chunked(res, sizes), { gitdir, repo: "r", log: silentLogger(), minObjects: 100 }, stats));
      assert.equal(stats.diverted, true);
      assert.equal(stats.objects, objects);
      assert.equal(stats.packSha, pack.subarray(-20).toString("hex"));
      const got = demux(out);
      const want = demux(res);
      assert.deepEqual(got.other, want.other, `chunking ${sizes.join(",")}`);
      assert.deepEqual(got.pack, EMPTY_PACK);
      // Every object of the commit is now in the target repo, indexed.
      assert.equal(await git(["--git-dir", gitdir, "cat-file", "-t", head]), "commit");
      await git(["--git-dir", gitdir, "update-ref", "refs/heads/main", head]);
      await git(["--git-dir", gitdir, "fsck", "--strict", "--no-progress"]);
      const packs = await readdir(join(gitdir, "objects", "pack"));
      assert.deepEqual(packs.sort(), [`pack-${stats.packSha}.idx`, `pack-${stats.packSha}.pack`]);
    }
  } finally {
    await t.cleanup();
  }
});

test("a pack below the threshold passes through byte for byte and nothing is written", async () => {
  const t = await tempDir();
  try {
    const { pack } = await packOf(t.path, 5);
    const res = response(pack, 100);
    const gitdir = join(t.path, "dst.git");
    await initRepo(gitdir, { bare: true });
    for (const sizes of [[1], [5, 2], [res.length]]) {
      const stats: DivertStats = { diverted: false, objects: 0 };
      const out = await collect(divertPack(chunked(res, sizes), { gitdir, repo: "r", log: silentLogger(), minObjects: 100 }, stats));
      assert.equal(stats.diverted, false);
      assert.equal(stats.objects, pack.readUInt32BE(8));
      assert.deepEqual(out, res);
    }
    assert.deepEqual(await readdir(join(gitdir, "objects", "pack")), []);
  } finally {
    await t.cleanup();
  }
});

test("a corrupt pack fails with GitProtocol and leaves no pack or temp file; a failing stream kills index-pack", async () => {
  const t = await tempDir();
  try {
    const { pack } = await packOf(t.path, 120);
    const bad = Buffer.from(pack);
    bad[bad.length - 30]! ^= 0xff; // damages the last object and the checksum no longer matches
    const gitdir = join(t.path, "dst.git");
    await initRepo(gitdir, { bare: true });
    const stats: DivertStats = { diverted: false, objects: 0 };
    await assert.rejects(collect(divertPack(chunked(response(bad, 2000), [4096]), { gitdir, repo: "r", log: silentLogger(), minObjects: 100 }, stats)),
      (err: unknown) => err instanceof HsError && err.code === "GitProtocol");
    assert.deepEqual(await readdir(join(gitdir, "objects", "pack")), []);

    // The channel dies half way through the pack: the error is the source's, and nothing stays behind.
    const res = response(pack, 2000);
    async function* dies(): AsyncGenerator<Buffer> {
      yield res.subarray(0, Math.floor(res.length / 2));
      throw new Error("channel closed");
    }
    await assert.rejects(collect(divertPack(dies(), { gitdir, repo: "r", log: silentLogger(), minObjects: 100 }, { diverted: false, objects: 0 })), /channel closed/);
    assert.deepEqual(await readdir(join(gitdir, "objects", "pack")), []);
  } finally {
    await t.cleanup();
  }
});

/** Live sh or git processes whose parent is `ppid` (from /proc): what a pending checkout leaves running. */
function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const argv0 = readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0")[0];
      if (Number(fields[1]) === ppid && fields[0] !== "Z" && (argv0 === "sh" || argv0 === "git")) out.push(Number(e));
    } catch { /* exited meanwhile */ }
  }
  return out;
}

test("with a fresh worktree, the index-pack process checks it out only when asked, after the pack is in; released, it leaves the tree empty", async () => {
  const t = await tempDir();
  try {
    const { pack, head, repo } = await packOf(t.path, 150);
    const res = response(pack, 1000);
    for (const ask of [true, false]) {
      const gitdir = join(t.path, `dst-${ask}.git`);
      const worktree = join(t.path, `wt-${ask}`);
      await initRepo(gitdir, { bare: true });
      await prepareWorktree(worktree, gitdir);
      assert.equal(await isFreshWorktree(worktree), true);
      const stats: DivertStats = { diverted: false, objects: 0 };
      await collect(divertPack(chunked(res, [4096]), { gitdir, repo: "r", log: silentLogger(), minObjects: 100, checkoutInto: worktree }, stats));
      assert.ok(stats.readTree, "the checkout waits in the index-pack process");
      // The pack is indexed, and the worktree untouched until the caller (after the fetch and its refs) asks.
      assert.equal(await git(["--git-dir", gitdir, "cat-file", "-t", head]), "commit");
      assert.deepEqual(await readdir(worktree), [".git"]);
      if (ask) {
        const r = await stats.readTree.run(head);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(await git(["ls-files"], { cwd: worktree }), await git(["ls-files"], { cwd: repo }));
        assert.equal(await git(["diff", "--name-only"], { cwd: worktree }), "", "every file written as indexed");
        await assert.rejects(stats.readTree.run(head), (err: unknown) => err instanceof HsError && err.code === "GitProtocol");
      } else {
        stats.readTree.release();
        stats.readTree.release(); // idempotent
        // The process exits without a checkout: nothing of this test's stays running, the tree stays empty.
        for (let i = 0; childrenOf(process.pid).length > 0; i++) {
          assert.ok(i < 500, `the released index-pack process did not exit: ${childrenOf(process.pid).map((p) => readFileSync(`/proc/${p}/cmdline`, "utf8")).join("; ")}`);
          await new Promise((r) => setTimeout(r, 10));
        }
        assert.deepEqual(await readdir(worktree), [".git"]);
      }
    }
  } finally {
    await t.cleanup();
  }
});
