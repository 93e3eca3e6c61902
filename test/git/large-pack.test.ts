// A pack larger than every buffer in the fetch path (64 MiB of random blobs,
// against a 1 MiB channel queue and 2 MiB SSH window), fetched by a level in
// its own process: commits match and fsck is clean with bounded peak RSS;
// a consumer that stops reading (index-pack stopped) and a parent that stops
// sending (upload-pack stopped) each fail the fetch at the command timeout
// with CommandTimeout, having received only a window's worth more; a
// parent that goes away fails it with PeerGone. No failure leaves a ref behind.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tempDir, makeKeyPair, git } from "../helpers/git-fixtures.js";
import { generateLargeRepo } from "../helpers/large-repo.js";
import type { FetchChildArgs, FetchChildLine } from "../helpers/fetch-child.js";
import { refreshExports, resolverFor } from "../../src/git/export-repos.js";
import { gitUploadPack } from "../../src/git/upload-pack.js";
import { startSshEndpoint, type SshEndpoint } from "../../src/ssh/ssh-endpoint.js";
import { AuthorizedKeyStore } from "../../src/ssh/authorized-key-store.js";
import { loadOrCreateLevelKeys } from "../../src/ssh/level-keys.js";
import { levelPaths } from "../../src/config/level-layout.js";
import { silentLogger } from "../../src/log/logger.js";

const MiB = 1024 * 1024;
const PACK_BYTES = Number(process.env.HSD_TEST_PACK_MIB ?? 64) * MiB;
/**
 * The bound this test states: fetching the pack raises the fetching process's
 * peak RSS by less than 60 MiB over its RSS once connected, i.e. it never
 * holds the 64 MiB pack. Measured: 42-44 MiB, the same for a 128 MiB pack
 * (HSD_TEST_PACK_MIB=128): a few MiB of queue and window plus SSH packet
 * buffers V8 has not collected yet. The old transport held the pack in one
 * growing buffer and copies of it (448 MiB peak for 99 MB in issue 16).
 */
const RSS_GROWTH_BOUND_KIB = 60 * 1024;
const FETCH_CHILD = fileURLToPath(new URL("../helpers/fetch-child.ts", import.meta.url));
const NAME = "bulk";

let dir: { path: string; cleanup: () => Promise<void> };
let endpoint: SshEndpoint;
let base: Omit<FetchChildArgs, "root" | "commandTimeoutMs">;
let exportDir: string;

before(async () => {
  dir = await tempDir("hsd-large-");
  const checkout = join(dir.path, "operator", NAME);
  await generateLargeRepo(checkout, { bytes: PACK_BYTES, commits: 4 });
  const p0 = levelPaths(join(dir.path, "l0"));
  await refreshExports({ repos: { [NAME]: checkout }, exportsDir: p0.reposDir, secretPatterns: ["secrets.yaml"], log: silentLogger() });
  exportDir = join(p0.reposDir, `${NAME}.git`);
  const keys = await loadOrCreateLevelKeys(p0.keysDir, { name: "l0" });
  const store = new AuthorizedKeyStore(p0.accessKeys, silentLogger());
  const reader = await makeKeyPair(dir.path, "reader");
  await store.addKey({ publicKey: reader.publicKey, role: "reader" });
  endpoint = await startSshEndpoint({
    host: "127.0.0.1", port: 0, hostKeyPath: keys.hostKeyPath, grpcSocketPath: p0.socket, keys: store,
    repos: resolverFor(p0.reposDir, [NAME]), uploadPack: gitUploadPack, maxUploadPacks: 4, queueTimeoutMs: 10_000, uploadPackTimeoutS: 120,
    authFailureDelayMs: 20, log: silentLogger(),
  });
  base = { host: "127.0.0.1", port: endpoint.address().port, fp: endpoint.hostKeyFingerprint, key: reader.privatePath, names: [NAME] };
});

after(async () => {
  await endpoint?.close();
  await dir?.cleanup();
});

interface Fetch { proc: ChildProcess; lines: FetchChildLine[]; next(type: FetchChildLine["type"], timeoutMs: number): Promise<FetchChildLine> }

function startFetch(args: FetchChildArgs): Fetch {
  const proc = spawn(process.execPath, ["--import", "tsx", FETCH_CHILD, JSON.stringify(args)], { stdio: ["ignore", "pipe", "inherit"] });
  const lines: FetchChildLine[] = [];
  const waiters: (() => void)[] = [];
  let buf = "";
  proc.stdout!.setEncoding("utf8").on("data", (b: string) => {
    buf += b;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) { lines.push(JSON.parse(buf.slice(0, i)) as FetchChildLine); buf = buf.slice(i + 1); }
    for (const w of waiters.splice(0)) w();
  });
  proc.on("exit", () => { for (const w of waiters.splice(0)) w(); });
  return {
    proc, lines,
    next: (type, timeoutMs) => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no "${type}" line from the fetching process within ${timeoutMs} ms`)), timeoutMs);
      const check = () => {
        const l = lines.find((x) => x.type === type);
        if (l) { clearTimeout(t); resolve(l); return; }
        if (proc.exitCode !== null || proc.signalCode !== null) { clearTimeout(t); reject(new Error(`fetching process exited ${proc.exitCode ?? proc.signalCode}`)); return; }
        waiters.push(check);
      };
      check();
    }),
  };
}

/**
 * Live git processes below `ppid` (children, or grandchildren: a new level's
 * index-pack runs under a small sh, see divert-pack.ts) whose command line
 * contains `needle`, read from /proc.
 */
function childrenMatching(ppid: number, needle: string): number[] {
  const procs: { pid: number; ppid: number; cmd: string }[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] === "Z") continue;
      procs.push({ pid: Number(e), ppid: Number(fields[1]), cmd: readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0").join(" ") });
    } catch { /* exited meanwhile */ }
  }
  const below = new Set([ppid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs) if (below.has(p.ppid) && !below.has(p.pid)) { below.add(p.pid); grew = true; }
  }
  return procs.filter((p) => p.pid !== ppid && below.has(p.pid) && p.cmd.startsWith("git ") && p.cmd.includes(needle)).map((p) => p.pid);
}

/** Polls /proc (a real condition, bounded) until `ppid` has a child running `needle`. */
async function waitForChild(ppid: number, needle: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [pid] = childrenMatching(ppid, needle);
    if (pid) return pid;
    if (Date.now() > deadline) throw new Error(`no ${needle} child of ${ppid} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function packFiles(gitdir: string): string[] {
  const d = join(gitdir, "objects", "pack");
  return existsSync(d) ? readdirSync(d) : [];
}

test("a 64 MiB pack syncs with commits matching, fsck clean, and the fetching process's peak RSS bounded", async () => {
  const root = join(dir.path, "l1-ok");
  const f = startFetch({ ...base, root, commandTimeoutMs: 300_000 });
  const connected = await f.next("connected", 30_000) as Extract<FetchChildLine, { type: "connected" }>;
  const done = await f.next("done", 300_000) as Extract<FetchChildLine, { type: "done" }>;
  assert.ok(done.ok, JSON.stringify(done));
  const served = await git(["--git-dir", exportDir, "rev-parse", "HEAD"]);
  assert.equal(done.heads[NAME], served);
  assert.ok(done.bytes > PACK_BYTES, `received ${done.bytes} bytes`);
  const p = levelPaths(root);
  const exp = join(p.reposDir, `${NAME}.git`);
  assert.equal(await git(["--git-dir", exp, "rev-parse", "HEAD"]), served);
  assert.equal(await git(["--git-dir", exp, "rev-list", "--count", "HEAD"]), await git(["--git-dir", exportDir, "rev-list", "--count", "HEAD"]));
  await git(["--git-dir", exp, "fsck", "--strict", "--no-progress"]);
  const wt = join(p.workDir, NAME);
  assert.equal(await git(["rev-parse", "HEAD"], { cwd: wt }), served);
  assert.equal(await git(["status", "--porcelain"], { cwd: wt }), "");
  const growth = done.hwmKiB - connected.rssKiB;
  assert.ok(growth < RSS_GROWTH_BOUND_KIB, `peak RSS grew by ${growth} KiB (connected at ${connected.rssKiB} KiB, peak ${done.hwmKiB} KiB)`);
});

test("a consumer that stops reading mid-fetch fails it at the command timeout with CommandTimeout, memory bounded", async () => {
  const root = join(dir.path, "l1-stalled-reader");
  const f = startFetch({ ...base, root, commandTimeoutMs: 5_000 });
  const connected = await f.next("connected", 30_000) as Extract<FetchChildLine, { type: "connected" }>;
  // index-pack is the fetch's consumer: stopped, it reads nothing more, so the pipe, the channel queue and the window fill.
  const indexPack = await waitForChild(f.proc.pid!, "index-pack", 30_000);
  process.kill(indexPack, "SIGSTOP");
  try {
    const done = await f.next("done", 60_000) as Extract<FetchChildLine, { type: "done" }>;
    assert.equal(done.ok, false);
    assert.equal((done as { code: string }).code, "CommandTimeout");
    const received = Number((done as { details: Record<string, unknown> }).details.bytes);
    assert.ok(received < PACK_BYTES / 2, `received ${received} bytes of a ${PACK_BYTES}-byte pack while the consumer was stopped`);
    const growth = done.hwmKiB - connected.rssKiB;
    assert.ok(growth < RSS_GROWTH_BOUND_KIB, `peak RSS grew by ${growth} KiB`);
  } finally {
    try { process.kill(indexPack, "SIGCONT"); } catch { /* killed by the fetch's abort, as it should be */ }
  }
  await new Promise((r) => (f.proc.exitCode === null ? f.proc.once("exit", r) : r(null)));
  // The aborted index-pack left nothing behind, and no ref moved.
  const exp = join(levelPaths(root).reposDir, `${NAME}.git`);
  assert.deepEqual(packFiles(exp).filter((n) => n.startsWith("tmp_") || n.endsWith(".pack")), []);
  assert.equal((await git(["--git-dir", exp, "for-each-ref"])), "");
});

test("a parent that stops sending mid-fetch fails it at the command timeout with CommandTimeout", async () => {
  const root = join(dir.path, "l1-stalled-peer");
  const f = startFetch({ ...base, root, commandTimeoutMs: 5_000 });
  await f.next("connected", 30_000);
  // Some of the pack has arrived; then level 0's upload-pack (a child of this test process) stops.
  await f.next("progress", 60_000);
  const [uploadPack] = childrenMatching(process.pid, "upload-pack");
  assert.ok(uploadPack, "upload-pack is running");
  process.kill(uploadPack, "SIGSTOP");
  try {
    const done = await f.next("done", 60_000) as Extract<FetchChildLine, { type: "done" }>;
    assert.equal(done.ok, false);
    assert.equal((done as { code: string }).code, "CommandTimeout");
    assert.ok(Number((done as { details: Record<string, unknown> }).details.bytes) < PACK_BYTES, "the fetch did not get the whole pack");
  } finally {
    try { process.kill(uploadPack, "SIGCONT"); } catch { /* the endpoint killed it when the channel closed */ }
  }
  await new Promise((r) => (f.proc.exitCode === null ? f.proc.once("exit", r) : r(null)));
  assert.equal((await git(["--git-dir", join(levelPaths(root).reposDir, `${NAME}.git`), "for-each-ref"])), "", "no ref names an object that never came");
});

// Last: it closes the endpoint the tests above share.
test("a parent that goes away mid-fetch fails it with PeerGone and leaves no ref behind", async () => {
  const root = join(dir.path, "l1-parent-gone");
  const f = startFetch({ ...base, root, commandTimeoutMs: 120_000 });
  await f.next("connected", 30_000);
  await f.next("progress", 60_000);
  await endpoint.close(); // ends every SSH connection: the fetch's channel closes with no exit status
  const done = await f.next("done", 60_000) as Extract<FetchChildLine, { type: "done" }>;
  assert.equal(done.ok, false);
  assert.equal((done as { code: string }).code, "PeerGone");
  await new Promise((r) => (f.proc.exitCode === null ? f.proc.once("exit", r) : r(null)));
  const exp = join(levelPaths(root).reposDir, `${NAME}.git`);
  assert.equal((await git(["--git-dir", exp, "for-each-ref"])), "");
  assert.deepEqual(packFiles(exp).filter((n) => n.startsWith("tmp_") || n.endsWith(".pack")), []);
});
