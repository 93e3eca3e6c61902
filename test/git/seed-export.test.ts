// Level 0's demo exports written straight from the prebuilt packs
// (src/git/seed-export.ts via seedDemoExport) ahead of their checkouts: the
// very export a refresh of the placed checkout writes, which that refresh then
// leaves alone; an edit the operator makes later is still exported; a refresh
// run while the checkout is being placed answers with the seeded export; and
// every case where a refresh must decide is declined with nothing written.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { getPriority } from "node:os";
import { mkdir, readFile, readdir, stat, truncate, writeFile } from "node:fs/promises";
import { tempDir, git, gitCallLog } from "../helpers/git-fixtures.js";
import { DEMO_REPO_NAMES } from "../../src/demo/demo-repos.js";
import { buildDemoPacks, placeDemoRepo, seedDemoExport } from "../../src/demo/demo-packs.js";
import { refreshExports, WORKING_REF } from "../../src/git/export-repos.js";
import { runGit } from "../../src/git/run-git.js";
import { silentLogger } from "../../src/log/logger.js";
import { HsError } from "../../src/domain/errors.js";
import type { RepoState } from "../../src/domain/events.js";

const PATTERNS = ["secrets.yaml", "*.key", "id_rsa*", "*.pem"];
let packs: { path: string; cleanup: () => Promise<void> };

before(async () => {
  packs = await tempDir("hsd-seed-packs-");
  await buildDemoPacks(join(packs.path, "packs"));
});
after(async () => { await packs.cleanup(); });

const packsDir = () => join(packs.path, "packs");
const refresh = (name: string, checkout: string, exportsDir: string, extra: { seeded?: (n: string) => Promise<RepoState | undefined> } = {}) =>
  refreshExports({ repos: { [name]: checkout }, exportsDir, secretPatterns: PATTERNS, log: silentLogger(), ...extra });

/** Every ref with its object, and HEAD's target. */
async function exportView(exp: string) {
  return {
    refs: await git(["--git-dir", exp, "for-each-ref", "--format=%(objectname) %(refname)"]),
    head: await git(["--git-dir", exp, "symbolic-ref", "HEAD"]),
  };
}

test("a seeded export is what a refresh of the placed checkout writes, and that refresh then has nothing to do", async () => {
  const t = await tempDir();
  try {
    for (const name of DEMO_REPO_NAMES) {
      const co = join(t.path, "demo", name);
      const seededDir = join(t.path, "seeded");
      const seed = await seedDemoExport(name, { checkout: co, exportsDir: seededDir, secretPatterns: PATTERNS, packsDir: packsDir() });
      assert.ok(seed, `${name} seeded`);
      assert.equal(existsSync(co), false, "the export comes before the checkout");
      const exp = join(seededDir, `${name}.git`);
      await git(["--git-dir", exp, "fsck", "--strict", "--no-dangling"]);
      assert.equal((await stat(join(seededDir))).mode & 0o777, 0o700);

      assert.equal(await placeDemoRepo(co, name, { packsDir: packsDir(), vmRootPassword: "pw" }), "prebuilt");
      // The reference: a first refresh of the same checkout into an empty exports dir.
      const [ref] = await refresh(name, co, join(t.path, "refreshed"));
      assert.equal(seed.servedCommit, ref!.servedCommit);
      assert.deepEqual(await exportView(exp), await exportView(join(t.path, "refreshed", `${name}.git`)));

      // The refresh of the seeded export reads the checkout's status (one git) and finds its stamp holds.
      const stampIno = (await stat(join(exp, "hsd-export-stamp.json"))).ino;
      const calls = await gitCallLog(join(t.path, `log-${name}`), "", async () => {
        const [again] = await refresh(name, co, seededDir);
        assert.equal(again!.servedCommit, seed.servedCommit);
      });
      assert.deepEqual(calls.map((c) => c.split(" ")[0]), ["status"], `${name}: ${calls.join(" | ")}`);
      assert.equal((await stat(join(exp, "hsd-export-stamp.json"))).ino, stampIno);
    }
  } finally {
    await t.cleanup();
  }
});

test("an edit the operator makes in a placed checkout is exported by the next refresh of a seeded export", async () => {
  const t = await tempDir();
  try {
    const co = join(t.path, "demo", "tofu");
    const exportsDir = join(t.path, "repos");
    const seed = await seedDemoExport("tofu", { checkout: co, exportsDir, secretPatterns: PATTERNS, packsDir: packsDir() });
    await placeDemoRepo(co, "tofu", { packsDir: packsDir() });
    const tracked = (await git(["ls-files"], { cwd: co })).split("\n")[0]!;
    await writeFile(join(co, tracked), "the operator's edit\n");
    const [s] = await refresh("tofu", co, exportsDir);
    const exp = join(exportsDir, "tofu.git");
    assert.notEqual(s!.servedCommit, seed!.servedCommit);
    assert.equal(await git(["--git-dir", exp, "rev-parse", `${s!.servedCommit}^`]), seed!.servedCommit);
    assert.equal(await git(["--git-dir", exp, "show", `${s!.servedCommit}:${tracked}`]), "the operator's edit");
    assert.equal(await git(["--git-dir", exp, "rev-parse", WORKING_REF]), s!.servedCommit);
  } finally {
    await t.cleanup();
  }
});

test("a refresh while the checkout is still being placed answers with the seeded export; without one it needs the checkout", async () => {
  const t = await tempDir();
  try {
    const co = join(t.path, "demo", "packer"); // not placed (yet)
    const exportsDir = join(t.path, "repos");
    const seed = await seedDemoExport("packer", { checkout: co, exportsDir, secretPatterns: PATTERNS, packsDir: packsDir() });
    assert.ok(seed);
    const [s] = await refresh("packer", co, exportsDir, { seeded: async () => seed });
    assert.deepEqual(s, seed);
    // Control: the same refresh without the seed reads the checkout, which is not there.
    const err = await refresh("packer", co, exportsDir, { seeded: async () => undefined }).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof HsError);
    assert.equal(err.code, "RepoNotFound");
  } finally {
    await t.cleanup();
  }
});

test("declined with nothing written: an existing export, a tracked path matching a secret pattern, a damaged pack, no files in the manifest", async () => {
  const t = await tempDir();
  try {
    const exportsDir = join(t.path, "repos");
    const seed = (name: string, o: { patterns?: string[]; packsDir?: string } = {}) => seedDemoExport(name, {
      checkout: join(t.path, "demo", name), exportsDir, secretPatterns: o.patterns ?? PATTERNS, packsDir: o.packsDir ?? packsDir(),
    });
    // A half-built seed a killed daemon left behind is cleared, and an export already there stands as it is.
    await mkdir(join(exportsDir, "bootstrap.git.999999.seed", "objects"), { recursive: true });
    assert.ok(await seed("bootstrap"));
    const before = await exportView(join(exportsDir, "bootstrap.git"));
    assert.equal(await seed("bootstrap"), undefined);
    assert.deepEqual(await exportView(join(exportsDir, "bootstrap.git")), before);

    // *.md is tracked in every demo repo: the refresh refuses it with its typed error.
    assert.equal(await seed("ansible", { patterns: [...PATTERNS, "*.md"] }), undefined);
    assert.equal(existsSync(join(exportsDir, "ansible.git")), false);
    const co = join(t.path, "demo", "ansible");
    await placeDemoRepo(co, "ansible", { packsDir: packsDir() });
    const err = await refreshExports({ repos: { ansible: co }, exportsDir, secretPatterns: [...PATTERNS, "*.md"], log: silentLogger() })
      .then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof HsError);
    assert.equal(err.code, "SecretInRepo");

    // One byte of the pack changed since the build (same size): its checksum fails.
    const broken = join(t.path, "broken");
    await buildDemoPacks(broken);
    const dir = join(broken, "tofu");
    const pack = join(dir, (await readdir(dir)).find((f) => f.endsWith(".pack"))!);
    const bytes = await readFile(pack);
    bytes[bytes.length >> 1] ^= 0xff;
    await writeFile(pack, bytes);
    assert.equal(await seed("tofu", { packsDir: broken }), undefined);
    await truncate(pack, 100);
    assert.equal(await seed("tofu", { packsDir: broken }), undefined);
    assert.equal(existsSync(join(exportsDir, "tofu.git")), false);

    // A manifest of an older build (no file list): nothing to check secrets against, so no seed.
    const m = JSON.parse(await readFile(join(broken, "manifest.json"), "utf8")) as { repos: Record<string, { files?: string[] }> };
    delete m.repos.packer!.files;
    await writeFile(join(broken, "manifest.json"), JSON.stringify(m));
    assert.equal(await seed("packer", { packsDir: broken }), undefined);
    assert.equal(existsSync(join(exportsDir, "packer.git")), false);
    assert.deepEqual((await readdir(exportsDir)).sort(), ["bootstrap.git"], "no half-built export left behind");
  } finally {
    await t.cleanup();
  }
});

test("runGit's niceness: the git process runs at that nice value, never above the caller's priority", async () => {
  // The alias's shell waits for stdin, which runGit writes only after it set the priority; it prints git's own nice value.
  const r = await runGit(["-c", "alias.nice-of-git=!read x; awk '{print $19}' /proc/$PPID/stat", "nice-of-git"], { input: "go\n", niceness: 7 });
  // Never above the test's own priority (a test run under `nice -n 12` sees 12).
  assert.equal(r.stdout.toString().trim(), String(Math.max(getPriority(), 7)));
  const plain = await runGit(["-c", "alias.nice-of-git=!read x; awk '{print $19}' /proc/$PPID/stat", "nice-of-git"], { input: "go\n" });
  assert.equal(plain.stdout.toString().trim(), String(getPriority()), "without it, git runs at the daemon's own");
});
