// A level's sync moves its images beside its repos (gitRepoOps over a real
// endpoint: ssh2 server, git upload-pack, hsd-image): the image is not held
// back until the repos are done; a failed repo fetch ends the image transfer
// and is the sync's outcome; a failed image still leaves the repos' states;
// cancelling the sync ends both.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { randomBytes, createHash } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startLevel0, type Level0 } from "../helpers/git-fixtures.js";
import { silentLogger } from "../../src/log/logger.js";
import { ImageDigests } from "../../src/images/image-digest.js";
import { imageServer } from "../../src/images/image-server.js";
import { gitUploadPack } from "../../src/git/upload-pack.js";
import { gitRepoOps } from "../../src/level/git-repo-ops.js";
import { parseConfig } from "../../src/config/load-config.js";
import { findOpenSsh } from "../../src/images/openssh-transfer.js";
import { HsError, ImageNotFoundError } from "../../src/domain/errors.js";
import type { SyncProgress } from "../../src/level/repo-ops.js";
import type { ImageEntry } from "../../src/config/config.js";
import type { ImageServer, UploadPackServer } from "../../src/ssh/exec-channel.js";

const SIZE = 4 << 20;
/** How long a held upload-pack waits for the image before it gives up (the test then fails on who opened it, never hangs). */
const GATE_FALLBACK_MS = 20_000;

let parts: { srcDir: string; data: Buffer; sha: string; entries: Record<string, ImageEntry> };
before(async () => {
  const srcDir = await mkdtemp(join(tmpdir(), "hsd-img-beside-"));
  const data = randomBytes(SIZE);
  await writeFile(join(srcDir, "pve-9.img"), data);
  parts = { srcDir, data, sha: createHash("sha256").update(data).digest("hex"), entries: { "pve-9": { path: join(srcDir, "pve-9.img"), sha256: "" } } };
});
after(() => rm(parts.srcDir, { recursive: true, force: true }));

/** Settles when `p` does, or after the fallback (a test waiting on the wrong order fails instead of hanging). */
const orFallback = (p: Promise<void>) => Promise.race([p, new Promise<void>((r) => setTimeout(r, GATE_FALLBACK_MS).unref())]);
/** Settles when the signal aborts. */
const untilAborted = (signal: AbortSignal) => new Promise<void>((r) => { if (signal.aborted) r(); else signal.addEventListener("abort", () => r(), { once: true }); });

/** Per-test behaviour of the parent's two services. */
interface Hooks {
  /** Runs before each upload-pack is served; may throw (a refused fetch) or wait. */
  beforeUploadPack?: (signal: AbortSignal) => Promise<void>;
  /** Replaces the image server's serve for this test. */
  serveImage?: (o: Parameters<ImageServer["serve"]>[0], real: ImageServer) => Promise<number>;
}

async function parentWith(hooks: Hooks): Promise<Level0> {
  const real = imageServer({ entries: parts.entries, digests: new ImageDigests(join(parts.srcDir, `digests-${Math.random()}.json`), silentLogger()) });
  const uploadPack: UploadPackServer = {
    errorLine: (m) => gitUploadPack.errorLine(m),
    serve: async (o) => { await hooks.beforeUploadPack?.(o.signal ?? new AbortController().signal); return gitUploadPack.serve(o); },
  };
  const images: ImageServer = { serve: (o) => (hooks.serveImage ? hooks.serveImage(o, real) : real.serve(o)) };
  return startLevel0({ uploadPack, images });
}

function childOps(l0: Level0, name: string, sshPath: string | undefined) {
  const root = join(l0.dir, name);
  const config = parseConfig([
    `level: { name: ${name}, depth: 1 }`,
    `parent: { host: 127.0.0.1, port: ${l0.port}, host_key_fingerprint: '${l0.endpoint.hostKeyFingerprint}', public_key: '${l0.controller.publicKey.trim()}' }`,
    `repo_names: [${l0.names.join(", ")}]`,
    "image_dir: images",
    `images: { pve-9: {} }`,
    "",
  ].join("\n"), "hsd.yaml", { root });
  const ops = gitRepoOps({
    config, repos: {}, userKeyPath: l0.reader.privatePath, log: silentLogger(), sshPath,
    digests: new ImageDigests(join(root, "state", "digests.json"), silentLogger()),
  });
  return { ops, root, dest: join(root, "images", "pve-9.img") };
}

const codeOf = (p: Promise<unknown>) => p.then(() => "resolved", (e: unknown) => (e instanceof HsError ? e.code : `untyped: ${String(e)}`));

/** Settles when the image server has finished serving the image's bytes (not its header-only probe). */
function imageDone() {
  let done!: () => void;
  const served = new Promise<void>((r) => { done = r; });
  return {
    served,
    serveImage: async (o: Parameters<ImageServer["serve"]>[0], real: ImageServer) => {
      const status = await real.serve(o);
      if (o.mode !== "head") done();
      return status;
    },
  };
}

test("the image moves while the repos' fetches are held: not after them", async () => {
  const img = imageDone();
  // Every upload-pack waits until the image has been served whole. Fetched
  // after the repos, the image would never come and each fetch would wait the fallback out.
  let openedBy: "image" | "fallback" | undefined;
  const gate = orFallback(img.served.then(() => { openedBy ??= "image"; })).then(() => { openedBy ??= "fallback"; });
  const l0 = await parentWith({ beforeUploadPack: () => gate, serveImage: img.serveImage });
  try {
    // As the daemon wires it: the image's bytes through the OpenSSH client when there is one.
    const c = childOps(l0, "l1", findOpenSsh());
    const progress: SyncProgress[] = [];
    const r = await c.ops.refresh(new AbortController().signal, (p) => progress.push(p));
    assert.equal(openedBy, "image");
    assert.equal(r.repos.length, l0.names.length);
    assert.ok(r.repos.every((x) => x.servedCommit && x.worktreeCommit === x.servedCommit));
    assert.ok(r.bytes > SIZE, "the repos' bytes and the image's are both counted");
    assert.equal((await stat(c.dest)).size, SIZE);
    // Both kinds of progress reached the phase.
    assert.ok(progress.some((p) => p.unit === "bytes" && p.repo === "image:pve-9" && p.loaded === SIZE));
    assert.ok(progress.some((p) => p.unit !== "bytes"));
  } finally {
    await l0.close();
  }
});

test("a failed repo fetch is the sync's outcome and ends the image transfer, which keeps its partial for a resume", async () => {
  let imageGone!: () => void;
  const imageEnded = new Promise<void>((r) => { imageGone = r; });
  let imageStarted!: () => void;
  const started = new Promise<void>((r) => { imageStarted = r; });
  const l0 = await parentWith({
    // Half the image, then nothing more until the reader goes away.
    serveImage: async (o) => {
      o.channel.resume();
      o.channel.write(`HSDIMG1 ${SIZE} ${parts.sha}\n`);
      o.channel.write(parts.data.subarray(0, SIZE / 2));
      imageStarted();
      await untilAborted(o.signal);
      imageGone();
      return 0;
    },
    // The fetches fail once the image is under way.
    beforeUploadPack: async () => { await orFallback(started); throw new Error("refused"); },
  });
  try {
    const c = childOps(l0, "l1", undefined);
    const code = await codeOf(c.ops.refresh(new AbortController().signal, () => {}));
    assert.notEqual(code, "resolved");
    assert.notEqual(code, "Cancelled", "the repos' error, not the image's cancellation");
    assert.ok(!code.startsWith("untyped"), code);
    // The reader went away from the image: refresh did not return while its transfer ran on.
    let ended = false;
    await orFallback(imageEnded.then(() => { ended = true; }));
    assert.ok(ended, "the image transfer ended with the repos' failure");
    assert.equal(existsSync(c.dest), false);
    assert.ok((await stat(`${c.dest}.partial`)).size > 0, "what arrived stays for the next sync to resume from");
  } finally {
    await l0.close();
  }
});

test("a failed image fails the sync and still records the repos it synced", async () => {
  const l0 = await parentWith({
    serveImage: () => Promise.reject(new ImageNotFoundError("no such image")),
  });
  try {
    const c = childOps(l0, "l1", undefined);
    assert.equal(await codeOf(c.ops.refresh(new AbortController().signal, () => {})), "ImageNotFound");
    const states = await c.ops.state();
    assert.equal(states.length, l0.names.length);
    for (const s of states) {
      assert.ok(s.servedCommit && s.worktreeCommit === s.servedCommit, `${s.name} synced`);
      // Only the sync's record (last) carries a repo's fetched bytes into state.
      assert.ok((s.bytes ?? 0) > 0, `${s.name}'s fetch recorded`);
    }
  } finally {
    await l0.close();
  }
});

test("cancelling the sync ends both the repos' fetches and the image transfer", async () => {
  const ac = new AbortController();
  let imageGone!: () => void;
  const imageEnded = new Promise<void>((r) => { imageGone = r; });
  let imageStarted!: () => void;
  const started = new Promise<void>((r) => { imageStarted = r; });
  let packHeld!: () => void;
  const held = new Promise<void>((r) => { packHeld = r; });
  // The sync is cancelled once the image is under way and a fetch is held.
  void Promise.all([orFallback(started), held]).then(() => ac.abort());
  const l0 = await parentWith({
    serveImage: async (o) => {
      o.channel.resume();
      o.channel.write(`HSDIMG1 ${SIZE} ${parts.sha}\n`);
      o.channel.write(parts.data.subarray(0, 1 << 20));
      imageStarted();
      await untilAborted(o.signal);
      imageGone();
      return 0;
    },
    // Every fetch hangs until its reader goes away.
    beforeUploadPack: async (signal) => {
      packHeld();
      await untilAborted(signal);
      throw new Error("reader gone");
    },
  });
  try {
    const c = childOps(l0, "l1", undefined);
    assert.equal(await codeOf(c.ops.refresh(ac.signal, () => {})), "Cancelled");
    let ended = false;
    await orFallback(imageEnded.then(() => { ended = true; }));
    assert.ok(ended, "the image transfer ended with the sync");
  } finally {
    await l0.close();
  }
});
