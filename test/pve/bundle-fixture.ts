// Builds the real hsd bundle once for the install tests: compiles src/ into a
// temp dist (type errors are `tsc --noEmit`'s business, not this fixture's;
// it only needs the emitted daemon), makes the programs' esbuild bundles there
// as `npm run build` does (scripts/bundle-entries.mjs) and runs scripts/bundle.mjs
// on it. Test-only.

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = new URL("../../", import.meta.url).pathname;

export interface BundleFixture { readonly path: string; readonly dir: string; close(): Promise<void> }

/** withNode: the bundle carries this node binary (a real Debian guest has none). */
export async function buildBundle(o: { withNode?: boolean } = {}): Promise<BundleFixture> {
  const dir = await mkdtemp(join(tmpdir(), "hsd-bundle-test-"));
  try {
    const dist = join(dir, "dist");
    const tsc = spawnSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "tsconfig.json"), "--outDir", dist, "--sourceMap", "false"], { encoding: "utf8", timeout: 120_000 });
    if (!existsSync(join(dist, "daemon/hsd.js"))) throw new Error(`tsc emitted no daemon: ${tsc.stdout}${tsc.stderr}`);
    // bundle-entries' warm run starts hsd, which finds its package.json above its modules.
    await copyFile(join(ROOT, "package.json"), join(dir, "package.json"));
    execFileSync(process.execPath, [join(ROOT, "scripts/bundle-entries.mjs"), "--dist", dist], { timeout: 180_000, stdio: "ignore" });
    const path = join(dir, "hsd-bundle.tar.gz");
    execFileSync(process.execPath, [join(ROOT, "scripts/bundle.mjs"), "--dist", dist, "--out", path, ...(o.withNode ? ["--with-node"] : [])], { timeout: 180_000, stdio: "ignore" });
    return { path, dir, close: () => rm(dir, { recursive: true, force: true }) };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
