// Test helper: whether V8 takes a program bundle's code cache in a fresh node
// that sets `flags` as the program's entry does (src/util/run-bundle.ts), given
// the run-bundle.js of the same build (the repo's dist/ or an unpacked bundle).

import { spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";

export function codeCacheTaken(runBundleJs: string, bundle: string, flags: readonly string[]): boolean {
  const m = JSON.stringify(pathToFileURL(runBundleJs).href);
  const probe = `const m = await import(${m}); m.setBundleFlags({ flags: ${JSON.stringify(flags)} }); process.stdout.write(String(!m.compileBundle(${JSON.stringify(bundle)}).cacheRejected));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", probe], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout === "true";
}
