// syncFromParent's scheduling: the repos to fetch go first, and the one batch
// status waits only for those that got a slot at once, so any number of fetch
// slots completes (a held repo in a slot never waits on a fetch queued behind it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { startLevel0, syncOptions } from "../helpers/git-fixtures.js";
import { syncFromParent } from "../../src/git/sync-from-parent.js";
import { refreshExports } from "../../src/git/export-repos.js";
import { readExportRefs } from "../../src/git/export-refs.js";
import { addCommit } from "../../src/demo/demo-repos.js";
import { silentLogger } from "../../src/log/logger.js";
import type { ExportRefs } from "../../src/domain/level-api.js";

for (const concurrency of [1, 2]) {
  test(`${concurrency} fetch slot(s): two changed repos and four held as told all complete`, { timeout: 60_000 }, async () => {
    const l0 = await startLevel0();
    try {
      const root = join(l0.dir, "l1");
      await syncFromParent(syncOptions(l0, root));
      const moved: Record<string, string> = {};
      for (const name of ["tofu", "iac-driver"]) moved[name] = await addCommit(l0.checkouts[name]!, { "added.txt": `${name}\n` }, "one commit");
      await refreshExports({ repos: l0.checkouts, exportsDir: l0.exportsDir, secretPatterns: ["secrets.yaml"], log: silentLogger() });
      const parentRefs: Record<string, ExportRefs> = Object.fromEntries(await Promise.all(
        l0.names.map(async (n) => [n, (await readExportRefs(join(l0.exportsDir, `${n}.git`)))!] as const),
      ));
      const res = await syncFromParent(syncOptions(l0, root, { concurrency, parentRefs }));
      for (const r of res.repos) {
        assert.equal(r.worktreeCommit, parentRefs[r.name]!.refs[parentRefs[r.name]!.head], r.name);
        assert.equal(r.dirty, false, r.name);
      }
      assert.deepEqual(Object.keys(res.bytesByRepo).filter((n) => res.bytesByRepo[n]! > 0).sort(), Object.keys(moved).sort());
    } finally {
      await l0.close();
    }
  });
}
