// batchWorktreeStatus: several working trees' tracked-file edits from one git
// process, each attributed to its own tree; a batch it cannot read whole is
// undefined (the caller then asks tree by tree). Real git.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeFile, rm, unlink } from "node:fs/promises";
import { tempDir, git } from "../helpers/git-fixtures.js";
import { batchWorktreeStatus, parseBatch } from "../../src/git/worktree-status.js";

async function tree(dir: string, files: Record<string, string>): Promise<string> {
  await git(["init", "-q", dir]);
  for (const [p, text] of Object.entries(files)) await writeFile(join(dir, p), text);
  await git(["add", "."], { cwd: dir });
  await git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c"], { cwd: dir });
  // hsd's trees are detached at the synced commit.
  await git(["checkout", "-q", "--detach"], { cwd: dir });
  return dir;
}

test("each tree's edited, staged and deleted tracked files are its own; untracked files are not edits", async () => {
  const t = await tempDir();
  try {
    const a = await tree(join(t.path, "a"), { "one.txt": "1\n", "two.txt": "2\n" });
    const b = await tree(join(t.path, "b"), { "x.yml": "x\n" });
    const c = await tree(join(t.path, "c with space"), { "keep.sh": "k\n", "gone.sh": "g\n" });
    await writeFile(join(a, "two.txt"), "edited\n");
    await writeFile(join(b, "untracked.txt"), "notes\n");
    await writeFile(join(c, "keep.sh"), "staged\n");
    await git(["add", "keep.sh"], { cwd: c });
    await unlink(join(c, "gone.sh"));
    assert.deepEqual(await batchWorktreeStatus([a, b, c]), [["two.txt"], [], ["gone.sh", "keep.sh"]]);
    // The status read takes no index lock and leaves no index.lock behind.
    assert.equal(await git(["status", "--porcelain", "--untracked-files=no"], { cwd: b }), "");
  } finally {
    await t.cleanup();
  }
});

test("a tree that is gone makes the batch unreadable (undefined), never a wrong attribution", async () => {
  const t = await tempDir();
  try {
    const a = await tree(join(t.path, "a"), { "one.txt": "1\n" });
    const b = await tree(join(t.path, "b"), { "x.yml": "x\n" });
    await writeFile(join(a, "one.txt"), "edited\n");
    await rm(b, { recursive: true });
    assert.equal(await batchWorktreeStatus([a, b]), undefined);
    assert.deepEqual(await batchWorktreeStatus([]), []);
  } finally {
    await t.cleanup();
  }
});

test("parseBatch splits at each header and wants exactly as many trees as asked for", () => {
  const raw = "## HEAD (no branch)\0 M a.txt\0D  b.txt\0## HEAD (no branch)\0## main\0?? never\0";
  assert.deepEqual(parseBatch(raw, 3), [["a.txt", "b.txt"], [], ["never"]]);
  assert.equal(parseBatch(raw, 2), undefined);
  assert.equal(parseBatch(" M orphan.txt\0", 1), undefined);
});
