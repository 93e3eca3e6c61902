// Preflight of a level's images on real files: present, readable, sha256
// known (and equal to the configured one); hashed once, then cached by size+mtime.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile, chmod, readFile, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { imageChecks } from "../../src/images/image-checks.js";
import { ImageDigests } from "../../src/images/image-digest.js";
import { silentLogger } from "../../src/log/logger.js";

test("present+known is ok; missing, unreadable or a sha256 that differs from config fails, each with its hint", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-imgchk-"));
  try {
    const bytes = Buffer.from("an image");
    const sha = createHash("sha256").update(bytes).digest("hex");
    for (const n of ["a", "b", "c"]) await writeFile(join(dir, `${n}.img`), bytes);
    await chmod(join(dir, "c.img"), 0o000);
    const digests = new ImageDigests(join(dir, "digests.json"), silentLogger());
    const checks = await imageChecks({
      dir, maxTransfers: 1, entries: {
        a: { path: join(dir, "a.img"), sha256: "" },
        b: { path: join(dir, "b.img"), sha256: "f".repeat(64) },
        c: { path: join(dir, "c.img"), sha256: "" },
        d: { path: join(dir, "d.img"), sha256: sha },
      },
    }, digests);
    const asRoot = process.getuid?.() === 0; // root reads a 000 file
    assert.deepEqual(checks.map((c) => [c.name, c.result]), [
      ["image a", "ok"], ["image b", "failed"], ["image c", asRoot ? "ok" : "failed"], ["image d", "failed"],
    ]);
    assert.ok(checks[0]!.detail.includes(sha.slice(0, 12)));
    assert.ok(checks.filter((c) => c.result === "failed").every((c) => c.hint));
    // Cached by size+mtime: the cache file names a's sha256; a touched file is hashed again.
    const cache = JSON.parse(await readFile(join(dir, "digests.json"), "utf8"));
    assert.equal(cache[join(dir, "a.img")].sha256, sha);
    await writeFile(join(dir, "a.img"), Buffer.from("other!!!"));
    await utimes(join(dir, "a.img"), new Date(), new Date(Date.now() + 5_000));
    const again = await new ImageDigests(join(dir, "digests.json"), silentLogger()).digest(join(dir, "a.img"));
    assert.equal(again.sha256, createHash("sha256").update("other!!!").digest("hex"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
