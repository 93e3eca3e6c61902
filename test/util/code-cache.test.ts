// The V8 code cache the build writes beside each bundle (scripts/bundle-entries.mjs,
// src/util/run-bundle.ts) must be accepted when the program starts the way it
// is always started: hsd (and hsctl run from hsd's bundle, as on a child) with its
// entry setting HSD_V8_FLAGS, hsctl from its own bundle with none. V8
// rejects a cache made under other flags, and then every hsd start parses the 3 MB
// bundle again (it did, unnoticed, once hsd gained a V8 flag). The flags must be in
// effect in a running hsd too, and set by its entry, never on node's command line.
// The build's last step replaces hsd's cache with one a level wrote after a
// real nest (scripts/warm-code-cache.mjs): only that level may write it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { HSD_V8_FLAGS } from "../../src/config/node-flags.js";
import { REPO } from "../helpers/hsctl.js";
import { readBundleSource, writesCodeCache } from "../../src/util/run-bundle.js";
import { codeCacheTaken } from "../helpers/code-cache-probe.js";

/** Compiles the bundle in a fresh node that sets `flags` as the program's entry does; true when V8 took the cache. */
const cacheAccepted = (bundle: string, flags: readonly string[]) => codeCacheTaken(join(REPO, "dist/util/run-bundle.js"), bundle, flags);

test("hsd's code cache is accepted under the flags every hsd runs with", () => {
  assert.ok(HSD_V8_FLAGS.length > 0, "the case this guards: hsd runs with V8 flags");
  assert.equal(cacheAccepted(join(REPO, "dist/daemon/hsd.bundle.cjs"), HSD_V8_FLAGS), true);
  // The cache is no good without them: the flags are part of what V8 checks.
  assert.equal(cacheAccepted(join(REPO, "dist/daemon/hsd.bundle.cjs"), []), false);
});

test("a real hsd runs under its V8 flags, set by its entry: its young generation stays at 1 MiB semi-spaces", () => {
  // Loading hsd's modules alone grows V8's default young generation (to 8 MiB and more); capped, it stays at 2 x 1 MiB.
  // Reported at exit by a preload (--import is no V8 flag: it leaves the caches alone).
  const report = "import v8 from 'node:v8'; process.on('exit', () => process.stderr.write('new_space ' + v8.getHeapSpaceStatistics().find((x) => x.space_name === 'new_space').space_size + '\\n'));";
  const r = spawnSync(process.execPath, ["--import", `data:text/javascript,${encodeURIComponent(report)}`, join(REPO, "dist/daemon/hsd.js"), "version"], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const size = Number(/new_space (\d+)/.exec(r.stderr)?.[1]);
  assert.ok(size > 0 && size <= 2 * 1024 * 1024, `new space ${size} bytes`);
});

test("a bundle's text reads as utf8 would: the built ASCII bundles, and a file with other bytes", async () => {
  for (const b of ["dist/daemon/hsd.bundle.cjs", "dist/cli/hsctl.bundle.cjs"]) {
    assert.equal(readBundleSource(join(REPO, b)), readFileSync(join(REPO, b), "utf8"), b);
  }
  const dir = await mkdtemp(join(tmpdir(), "hsd-bundle-text-"));
  try {
    const f = join(dir, "x.cjs");
    await writeFile(f, "const s = \"caf\u00e9 \u2192 \u{1f600}\";\n");
    assert.equal(readBundleSource(f), "const s = \"caf\u00e9 \u2192 \u{1f600}\";\n");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("hsctl's code cache is accepted as hsctl runs (no flags)", () => {
  assert.equal(cacheAccepted(join(REPO, "dist/cli/hsctl.bundle.cjs"), []), true);
});

test("hsd's bundle runs hsctl too (what a child gets): the same program as hsctl's own bundle, and hsd still runs hsd", () => {
  const run = (entry: string, args: string[]) => spawnSync(process.execPath, [join(REPO, entry), ...args], { encoding: "utf8", timeout: 60_000 });
  const own = run("dist/cli/hsctl.js", ["--help"]);
  const fromHsd = run("dist/daemon/hsctl.js", ["--help"]);
  assert.equal(own.status, 0, own.stderr);
  assert.equal(fromHsd.status, 0, fromHsd.stderr);
  assert.match(fromHsd.stdout, /^hsctl /);
  assert.equal(fromHsd.stdout, own.stdout);
  // A command's failure, its exit code and its message, are hsctl's as well (no daemon at this socket).
  const socket = join(tmpdir(), `hsd-no-daemon-${process.pid}.sock`);
  const a = run("dist/cli/hsctl.js", ["--socket", socket, "status"]);
  const b = run("dist/daemon/hsctl.js", ["--socket", socket, "status"]);
  assert.notEqual(b.status, 0);
  assert.deepEqual([b.status, b.stderr], [a.status, a.stderr]);
  const hsd = run("dist/daemon/hsd.js", ["version"]);
  assert.equal(hsd.status, 0, hsd.stderr);
  assert.match(hsd.stdout, /^hsd /);
});

/** hsd's bundle and loader as the build lays them out (no cache), with the package.json hsd finds above them. */
async function copyBundle(dir: string): Promise<void> {
  for (const f of ["dist/daemon/hsd.js", "dist/daemon/hsd.bundle.cjs", "dist/util/run-bundle.js", "package.json"]) {
    await mkdir(dirname(join(dir, f)), { recursive: true });
    await copyFile(join(REPO, f), join(dir, f));
  }
}

/** `hsd version` from the copy in `dir` (its entry sets its V8 flags), with `env` added. */
function hsdVersion(dir: string, env: Record<string, string>): void {
  const r = spawnSync(process.execPath, [join(dir, "dist/daemon/hsd.js"), "version"], { env: { ...process.env, ...env }, encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
}

test("the cache is written by a level only when it is the level HSD_WRITE_CODE_CACHE names", () => {
  const w = (env: NodeJS.ProcessEnv) => writesCodeCache(env);
  assert.equal(w({ HSD_WRITE_CODE_CACHE: "1" }), true, "bundle-entries' warm run");
  assert.equal(w({ HSD_WRITE_CODE_CACHE: "level:l0/l1", HSD_LEVEL_PATH: "l0/l1" }), true);
  // The warm nest's other hsds inherit the same environment: none of them may overwrite l1's cache at its exit.
  assert.equal(w({ HSD_WRITE_CODE_CACHE: "level:l0/l1", HSD_LEVEL_PATH: "l0/l1/l2" }), false);
  assert.equal(w({ HSD_WRITE_CODE_CACHE: "level:l0/l1", HSD_LEVEL_PATH: "l0" }), false);
  assert.equal(w({ HSD_WRITE_CODE_CACHE: "level:l0/l1" }), false, "level 0 (hsctl starts it without a level path)");
  assert.equal(w({ HSD_WRITE_CODE_CACHE: "level:", HSD_LEVEL_PATH: "" }), false);
  assert.equal(w({ HSD_LEVEL_PATH: "l0/l1" }), false);
  assert.equal(w({ HSD_WRITE_CODE_CACHE: "0" }), false);
});

test("a real hsd writes the cache at its exit only as the level named", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-code-cache-"));
  try {
    await copyBundle(dir);
    const cache = join(dir, "dist/daemon/hsd.bundle.cjs.cache");
    const version = (levelPath: string) => hsdVersion(dir, { HSD_WRITE_CODE_CACHE: "level:l0/l1", HSD_LEVEL_PATH: levelPath });
    version("l0/l1/l2");
    assert.equal(existsSync(cache), false, "another level of the warm nest wrote the cache");
    version("l0/l1");
    assert.equal(existsSync(cache), true, "the named level wrote no cache");
    assert.equal(cacheAccepted(join(dir, "dist/daemon/hsd.bundle.cjs"), HSD_V8_FLAGS), true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("the build's hsd cache comes from a nest: it holds code that loading the modules never compiles", async () => {
  // What bundle-entries' warm run alone writes (`hsd version`: every module loaded), beside a copy of the same bundle.
  const dir = await mkdtemp(join(tmpdir(), "hsd-code-cache-"));
  try {
    await copyBundle(dir);
    hsdVersion(dir, { HSD_WRITE_CODE_CACHE: "1" });
    const modulesOnly = (await stat(join(dir, "dist/daemon/hsd.bundle.cjs.cache"))).size;
    const built = (await stat(join(REPO, "dist/daemon/hsd.bundle.cjs.cache"))).size;
    // A nest compiles the SSH client and server, gRPC calls, the sync and the engine: about twice the code here.
    assert.ok(built > modulesOnly * 1.3, `the build's cache (${built} bytes) is no larger than the modules-only one (${modulesOnly}): scripts/warm-code-cache.mjs did not replace it`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
