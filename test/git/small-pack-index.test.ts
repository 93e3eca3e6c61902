// indexSmallPack against git itself: the .idx git writes for the same pack,
// byte for byte, with offset deltas and with ref deltas; a thin pack is
// declined; a damaged pack is a GitProtocol error, never a wrong index.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { git, run, tempDir } from "../helpers/git-fixtures.js";
import { applyDelta, indexSmallPack } from "../../src/git/small-pack-index.js";
import { HsError } from "../../src/domain/errors.js";

/** A repo whose history has deltas: one file grown over 30 commits, beside files rewritten in turn. */
async function historyRepo(dir: string): Promise<string> {
  const repo = join(dir, "r");
  await git(["init", "-q", repo]);
  const script = [
    "set -e",
    "for i in $(seq 1 30); do",
    "  seq 1 $((i * 40)) > grown.txt",
    "  echo \"version $i\" > \"part$((i % 5)).txt\"",
    "  git add -A",
    "  git -c user.email=t@example.invalid -c user.name=t commit -q -m \"commit $i\"",
    "done",
    "git -c user.email=t@example.invalid -c user.name=t tag -a v1 -m 'a tag' HEAD~3",
  ].join("\n");
  const r = await run("sh", ["-c", script], { cwd: repo });
  assert.equal(r.code, 0, r.stderr);
  return repo;
}

/** git pack-objects' pack and the .idx it wrote beside it. */
async function gitPack(repo: string, dir: string, name: string, revs: string, flags: string[]): Promise<{ pack: Buffer; idx: Buffer; idxPath: string }> {
  const r = await run("git", ["pack-objects", "-q", "--revs", ...flags, join(dir, name)], { cwd: repo, input: revs });
  assert.equal(r.code, 0, r.stderr);
  const base = join(dir, (await readdir(dir)).find((n) => n.startsWith(`${name}-`) && n.endsWith(".pack"))!.slice(0, -".pack".length));
  return { pack: await readFile(`${base}.pack`), idx: await readFile(`${base}.idx`), idxPath: `${base}.idx` };
}

function codeOf(fn: () => unknown): string {
  try { fn(); } catch (err) { assert.ok(err instanceof HsError, String(err)); return err.code; }
  return "none";
}

test("the .idx is git's own, byte for byte, for offset deltas and for ref deltas", async () => {
  const { path: dir, cleanup } = await tempDir();
  try {
    const repo = await historyRepo(dir);
    for (const [name, flags] of [["ofs", ["--delta-base-offset"]], ["ref", []]] as const) {
      const { pack, idx, idxPath } = await gitPack(repo, dir, name, "", ["--all", ...flags]);
      assert.match(await git(["verify-pack", "-v", idxPath]), /chain length = [1-9]/, `${name}: the pack has deltas`);
      const mine = indexSmallPack(pack);
      assert.ok(mine, name);
      assert.ok(mine.idx.equals(idx), `${name}: idx differs from git's`);
      const listed = await run("sh", ["-c", `git show-index < '${idxPath}'`]);
      assert.deepEqual(mine.oids, listed.stdout.trim().split("\n").map((l) => l.split(" ")[1]!).sort());
    }
  } finally {
    await cleanup();
  }
});

test("a thin pack (a delta on an object outside it) is declined, not indexed", async () => {
  const { path: dir, cleanup } = await tempDir();
  try {
    const repo = await historyRepo(dir);
    // As upload-pack sends one to a client that asks for thin-pack: only on --stdout.
    const file = join(dir, "thin.pack");
    const r = await run("sh", ["-c", `printf 'HEAD\\n^HEAD~1\\n' | git pack-objects -q --revs --thin --stdout > '${file}'`], { cwd: repo });
    assert.equal(r.code, 0, r.stderr);
    const pack = await readFile(file);
    // git itself needs the store to complete it.
    assert.notEqual((await run("git", ["index-pack", "-o", join(dir, "thin.idx"), file])).code, 0);
    assert.equal(indexSmallPack(pack), undefined);
  } finally {
    await cleanup();
  }
});

test("a damaged pack is a GitProtocol error: truncated, a byte flipped in compressed data, or a wrong object count", async () => {
  const { path: dir, cleanup } = await tempDir();
  try {
    const repo = await historyRepo(dir);
    const { pack } = await gitPack(repo, dir, "p", "", ["--all", "--delta-base-offset"]);
    assert.equal(codeOf(() => indexSmallPack(pack.subarray(0, pack.length - 100))), "GitProtocol");
    const flipped = Buffer.from(pack);
    flipped[40] = flipped[40]! ^ 0xff;
    assert.equal(codeOf(() => indexSmallPack(flipped)), "GitProtocol");
    const more = Buffer.from(pack);
    more.writeUInt32BE(pack.readUInt32BE(8) + 1, 8);
    assert.equal(codeOf(() => indexSmallPack(more)), "GitProtocol");
    const fewer = Buffer.from(pack);
    fewer.writeUInt32BE(pack.readUInt32BE(8) - 1, 8);
    assert.equal(codeOf(() => indexSmallPack(fewer)), "GitProtocol");
    assert.equal(codeOf(() => indexSmallPack(Buffer.from("not a pack at all, but long enough to read"))), "GitProtocol");
  } finally {
    await cleanup();
  }
});

test("applyDelta: copies and inserts as git's format says; a copy past the base is refused", () => {
  const base = Buffer.from("hello, world");
  // base size 12, result size 11: copy 5 bytes from offset 0, insert "!!", copy 4 bytes from offset 7 ("worl").
  const delta = Buffer.from([12, 11, 0x90, 5, 2, 0x21, 0x21, 0x91, 7, 4]);
  assert.equal(applyDelta(base, delta).toString(), "hello!!worl");
  assert.equal(codeOf(() => applyDelta(base, Buffer.from([12, 5, 0x91, 10, 5]))), "GitProtocol");
  assert.equal(codeOf(() => applyDelta(base, Buffer.from([11, 1, 0x01, 0x41]))), "GitProtocol");
  assert.equal(codeOf(() => applyDelta(base, Buffer.from([12, 2, 0x00]))), "GitProtocol");
});
