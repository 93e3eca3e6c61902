// The V8 code cache the build writes beside each bundle (scripts/bundle-entries.mjs,
// src/util/run-bundle.ts) must be accepted when the program starts the way it
// is always started: hsd with HSD_NODE_FLAGS, hsctl with none. V8 rejects a
// cache made under other flags, and then every hsd start parses the 3 MB
// bundle again (it did, unnoticed, once hsd gained --max-semi-space-size).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { HSD_NODE_FLAGS } from "../../src/config/node-flags.js";
import { REPO } from "../helpers/hsctl.js";

/** Compiles the bundle in a fresh node started with `flags`, as the program would; true when V8 took the cache. */
function cacheAccepted(bundle: string, flags: readonly string[]): boolean {
  const runBundle = pathToFileURL(join(REPO, "dist/util/run-bundle.js")).href;
  const probe = `const m = await import(${JSON.stringify(runBundle)}); process.stdout.write(String(!m.compileBundle(${JSON.stringify(bundle)}).cacheRejected));`;
  const r = spawnSync(process.execPath, [...flags, "--input-type=module", "-e", probe], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout === "true";
}

test("hsd's code cache is accepted under the flags every hsd runs with", () => {
  assert.ok(HSD_NODE_FLAGS.length > 0, "the case this guards: hsd runs with V8 flags");
  assert.equal(cacheAccepted(join(REPO, "dist/daemon/hsd.bundle.cjs"), HSD_NODE_FLAGS), true);
});

test("hsctl's code cache is accepted as hsctl runs (no flags)", () => {
  assert.equal(cacheAccepted(join(REPO, "dist/cli/hsctl.bundle.cjs"), []), true);
});
