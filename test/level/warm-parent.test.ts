// A level below 0 opens its SSH connection to its parent when asked to warm it
// (Identify, during the parent's handshake), before any sync, and sets up its
// first sync's repositories; the sync then runs on that same connection (the
// parent's endpoint, a real ssh2 server with git upload-pack, sees one
// authenticated session in all) and on those repositories. Images that config
// fully describes move first, and the connect and set-up wait for the repos' turn.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { levelPaths } from "../../src/config/level-layout.js";
import { homestakLayout } from "../../src/homestak/layout.js";
import { exportPath } from "../../src/git/export-repos.js";
import { startLevel0 } from "../helpers/git-fixtures.js";
import { createLogger, silentLogger } from "../../src/log/logger.js";
import { gitRepoOps } from "../../src/level/git-repo-ops.js";
import { parseConfig } from "../../src/config/load-config.js";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createHash, randomBytes } from "node:crypto";
import { imageServer } from "../../src/images/image-server.js";
import { ImageDigests } from "../../src/images/image-digest.js";
import { findOpenSsh } from "../../src/images/openssh-transfer.js";

/** The parent endpoint's "authenticated" lines, and a wait for the n-th (bounded: a missing one fails, never hangs). */
function authLog() {
  const seen: Record<string, unknown>[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const destination = new Writable({
    write(chunk, _e, cb) {
      const line = JSON.parse(String(chunk)) as Record<string, unknown>;
      if (line.msg === "authenticated") {
        seen.push(line);
        for (const w of waiters.filter((x) => seen.length >= x.n)) w.resolve();
      }
      cb();
    },
  });
  const nth = (n: number, ms = 20_000) => new Promise<void>((resolve, reject) => {
    if (seen.length >= n) return resolve();
    const t = setTimeout(() => reject(new Error(`no authenticated session #${n} within ${ms} ms (saw ${seen.length})`)), ms);
    waiters.push({ n, resolve: () => { clearTimeout(t); resolve(); } });
  });
  return { log: createLogger({ level: "debug", destination }), seen, nth };
}

test("warmParent opens the parent connection before any sync; the sync then runs on it (one session in all)", async () => {
  const auth = authLog();
  const l0 = await startLevel0({ log: auth.log });
  try {
    const root = join(l0.dir, "l1");
    const config = parseConfig([
      "level: { name: l1, depth: 1 }",
      `parent: { host: 127.0.0.1, port: ${l0.port}, host_key_fingerprint: '${l0.endpoint.hostKeyFingerprint}', public_key: '${l0.controller.publicKey.trim()}' }`,
      `repo_names: [${l0.names.join(", ")}]`,
      "",
    ].join("\n"), "hsd.yaml", { root });
    const ops = gitRepoOps({ config, repos: {}, userKeyPath: l0.reader.privatePath, log: silentLogger() });
    assert.ok(ops.warmParent, "a level below 0 can warm its parent connection");

    ops.warmParent!();
    await auth.nth(1);
    assert.equal(auth.seen[0]!.role, "reader");
    // The first sync's repositories (export and working tree's .git, HEAD last) are set up before it is asked for.
    const layout = homestakLayout(config, {});
    const heads = l0.names.flatMap((n) => [join(exportPath(levelPaths(root).reposDir, n), "HEAD"), join(layout.worktree(n), ".git", "HEAD")]);
    const deadline = Date.now() + 20_000;
    while (!heads.every((h) => existsSync(h)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(heads.filter((h) => !existsSync(h)), []);

    const r = await ops.refresh(new AbortController().signal, () => {});
    assert.equal(r.repos.length, l0.names.length);
    assert.ok(r.repos.every((x) => x.servedCommit && x.worktreeCommit === x.servedCommit));
    // Warming again while connected, and the sync, opened nothing more.
    ops.warmParent!();
    await ops.refresh(new AbortController().signal, () => {});
    assert.equal(auth.seen.length, 1);
  } finally {
    await l0.close();
  }
});

test("images config fully describes move first: the parent connection and the repos' set-up wait for reposAfter", async () => {
  const auth = authLog();
  const src = await mkdtemp(join(tmpdir(), "hsd-warm-img-"));
  const data = randomBytes(3 << 20);
  const sha = createHash("sha256").update(data).digest("hex");
  await writeFile(join(src, "pve-9.img"), data);
  const served = { "pve-9": { path: join(src, "pve-9.img"), sha256: "" } };
  const l0 = await startLevel0({ log: auth.log, images: imageServer({ entries: served, digests: new ImageDigests(join(src, "d.json"), silentLogger()) }), maxImageTransfers: 2 });
  try {
    const root = join(l0.dir, "l1");
    const config = parseConfig([
      "level: { name: l1, depth: 1 }",
      `parent: { host: 127.0.0.1, port: ${l0.port}, host_key_fingerprint: '${l0.endpoint.hostKeyFingerprint}', public_key: '${l0.controller.publicKey.trim()}', host_key: '${l0.endpoint.hostKey}' }`,
      `repo_names: [${l0.names.join(", ")}]`,
      `images: { pve-9: { sha256: '${sha}', size: ${data.length} } }`,
      // In the level's own directory: the default is the system's /var/lib/vz/template/iso.
      "image_dir: images",
      "",
    ].join("\n"), "hsd.yaml", { root });
    const ops = gitRepoOps({
      config, repos: {}, userKeyPath: l0.reader.privatePath, log: silentLogger(), sshPath: findOpenSsh(),
      digests: new ImageDigests(join(root, "state", "digests.json"), silentLogger()),
    });
    let release!: () => void;
    const reposAfter = new Promise<void>((r) => { release = r; });
    const layout = homestakLayout(config, {});
    const heads = l0.names.map((n) => join(layout.worktree(n), ".git", "HEAD"));

    assert.equal(await ops.warmParent!(reposAfter), true, "the image got in");
    assert.ok((await readFile(join(config.images.dir, "pve-9.img"))).equals(data));
    // Only OpenSSH's session so far (the image's); nothing of the repos yet.
    assert.equal(auth.seen.length, 1);
    assert.deepEqual(heads.filter((h) => existsSync(h)), []);

    release();
    await auth.nth(2);
    const r = await ops.refresh(new AbortController().signal, () => {});
    assert.ok(r.repos.every((x) => x.servedCommit && x.worktreeCommit === x.servedCommit));
    assert.equal(auth.seen.length, 2, "the sync ran on the connection warmed after reposAfter");
  } finally {
    await l0.close();
    await rm(src, { recursive: true, force: true });
  }
});
