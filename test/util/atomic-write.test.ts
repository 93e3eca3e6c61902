// Unit tests of src/util/atomic-write.ts: cleanStaleTemps removes exactly the
// temp files a killed writeFileAtomic leaves (a real one, made by a
// beforeRename hook that aborts the write), and nothing else.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, readdir, readFile, rename, rm, writeFile, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanStaleTemps, writeFileAtomic } from "../../src/util/atomic-write.js";

const root = await mkdtemp(join(tmpdir(), "hsd-atomic-"));
after(() => rm(root, { recursive: true, force: true }));

/** The temp file a write killed between fsync and rename leaves: the hook keeps it, then the write is abandoned. */
async function strandedTemp(path: string, data: string): Promise<string> {
  let kept = "";
  const abandoned = new Error("killed");
  await assert.rejects(writeFileAtomic(path, data, {
    beforeRename: async (tmp) => { kept = tmp; await writeFile(`${tmp}.keep`, await readFile(tmp)); throw abandoned; },
  }), (e) => e === abandoned);
  // writeFileAtomic removes its temp on an error it sees; a SIGKILL would not. Put it back as the kill left it.
  await rename(`${kept}.keep`, kept);
  return kept.slice(kept.lastIndexOf("/") + 1);
}

test("removes the temp files of interrupted writes, keeps everything else", async () => {
  const dir = join(root, "state");
  await mkdir(dir);
  await writeFileAtomic(join(dir, "journal.json"), "{\"v\":1}\n");
  const stale1 = await strandedTemp(join(dir, "journal.json"), "{\"v\":2}\n");
  const stale2 = await strandedTemp(join(dir, "secrets.yaml"), "a: 1\n");
  assert.match(stale1, /^\.journal\.json\.[0-9a-f]{12}\.tmp$/);
  const keep = [
    "journal.json", "notes.tmp", ".journal.json.tmp", ".journal.json.xyz123456789.tmp", ".journal.json.0123456789ab.tmp.bak",
    "journal.json.0123456789ab.tmp",
  ];
  for (const n of keep.slice(1)) await writeFile(join(dir, n), "x");
  await mkdir(join(dir, ".sub.0123456789ab.tmp")); // a directory is never removed
  await symlink("/nonexistent", join(dir, ".link.0123456789ab.tmp")); // nor a symlink

  const removed = await cleanStaleTemps(dir);
  assert.deepEqual(removed.sort(), [stale1, stale2].sort());
  assert.deepEqual((await readdir(dir)).sort(), [...keep, ".sub.0123456789ab.tmp", ".link.0123456789ab.tmp"].sort());
  assert.equal(await readFile(join(dir, "journal.json"), "utf8"), "{\"v\":1}\n");
  assert.deepEqual(await cleanStaleTemps(dir), [], "idempotent");
});

test("a missing directory is nothing to clean", async () => {
  assert.deepEqual(await cleanStaleTemps(join(root, "absent")), []);
  await writeFile(join(root, "plain-file"), "x");
  assert.deepEqual(await cleanStaleTemps(join(root, "plain-file")), []);
});
