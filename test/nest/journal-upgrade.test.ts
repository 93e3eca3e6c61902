// A journal written before provider options were an opaque bag (the local
// provider's isolation as its own field) still loads: the field becomes the
// child's options, so a resume or destroy builds the same provider.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Journal } from "../../src/nest/journal.js";

test("an old journal's isolation becomes the child's options and is written back in the new form", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-journal-"));
  try {
    const path = join(dir, "journal.json");
    await writeFile(path, JSON.stringify({
      version: 1,
      children: {
        l1: { name: "l1", index: 0, provider: "local", isolation: "netns", state: "ready", phases: {} },
        l2: { name: "l2", index: 1, provider: "pve", state: "failed", phases: {} },
      },
    }));
    const j = new Journal(path);
    await j.load();
    assert.deepEqual(j.child("l1")?.options, { isolation: "netns" });
    assert.equal("isolation" in j.child("l1")!, false);
    assert.deepEqual(j.child("l2")?.options, {});
    await j.update((d) => { d.children.l1!.state = "failed"; });
    const back = JSON.parse(await readFile(path, "utf8"));
    assert.deepEqual(back.children.l1.options, { isolation: "netns" });
  } finally { await rm(dir, { recursive: true, force: true }); }
});
