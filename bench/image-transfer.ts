// Image transfer benchmark: one image parent -> child over hsd's SSH endpoint
// (hsd-image + fetchImage, each end in its own process) against OpenSSH's
// `ssh host cat image > file` to an sshd on the same machine, in the same run;
// then a transfer cut at 50% and resumed. Goals: >= 0.8x OpenSSH's
// throughput, peak RSS of either hsd process <= 150 MiB, resume moves <= 55%.
// Run: npm run bench -- image-transfer.ts: at 256 MiB and 1 GiB (the goals' size), so growth shows;
// HSD_BENCH_IMAGE_MIB=N measures N MiB only.

import { setFlagsFromString } from "node:v8";
import { HSD_V8_FLAGS } from "../src/config/node-flags.js";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdtemp, rm, writeFile, mkdir, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PerformanceObserver, constants } from "node:perf_hooks";
import { silentLogger } from "../src/log/logger.js";
import { loadOrCreateLevelKeys } from "../src/ssh/level-keys.js";
import { AuthorizedKeyStore } from "../src/ssh/authorized-key-store.js";
import { startSshEndpoint } from "../src/ssh/ssh-endpoint.js";
import { gitUploadPack } from "../src/git/upload-pack.js";
import { ImageDigests } from "../src/images/image-digest.js";
import { imageServer } from "../src/images/image-server.js";
import { fetchImage } from "../src/images/fetch-image.js";
import { ParentConnection } from "../src/ssh/parent-connection.js";
import { findOpenSsh, parentOpenSshRoute } from "../src/images/openssh-transfer.js";

const SELF = fileURLToPath(import.meta.url);
const MIB = 1 << 20;
const maxRssMiB = () => process.resourceUsage().maxRSS / 1024;
/** CPU seconds (user + system) this process used; an ssh it ran is not counted. */
const cpuS = () => { const u = process.resourceUsage(); return (u.userCPUTime + u.systemCPUTime) / 1e6; };

/** Child process: the parent level's endpoint serving one image. */
async function serve(root: string, image: string, readerPub: string): Promise<void> {
  const keys = await loadOrCreateLevelKeys(join(root, "keys"), { name: "l0" });
  const store = new AuthorizedKeyStore(join(root, "authorized-keys.json"), silentLogger());
  await store.load();
  await store.addKey({ publicKey: readerPub, role: "reader" });
  const digests = new ImageDigests(join(root, "digests.json"), silentLogger());
  await digests.digest(image); // hashed before timing: a level hashes once, then serves from the cache
  const ep = await startSshEndpoint({
    host: "127.0.0.1", port: 0, hostKeyPath: keys.hostKeyPath, grpcSocketPath: join(root, "none.sock"), keys: store,
    uploadPack: gitUploadPack, repos: () => undefined, images: imageServer({ entries: { img: { path: image, sha256: "" } }, digests }),
    maxUploadPacks: 1, queueTimeoutMs: 30_000, uploadPackTimeoutS: 60, authFailureDelayMs: 10, log: silentLogger(),
  });
  process.send!({ port: ep.address().port, fp: ep.hostKeyFingerprint });
  // Printed detail: this process's full (mark-compact) GCs, which the serving side's per-packet buffers drive.
  const gc = { major: 0, ms: 0 };
  new PerformanceObserver((l) => {
    for (const e of l.getEntries()) if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) { gc.major++; gc.ms += e.duration; }
  }).observe({ entryTypes: ["gc"] });
  process.on("message", async () => { process.send!({ rss: maxRssMiB(), cpu: cpuS(), gc }); await ep.close(); process.exit(0); });
}

/** Child process: the child level fetching it (optionally cutting the link at `cut` of the size). */
async function fetch(port: number, fp: string, key: string, dest: string, cut: number): Promise<void> {
  const parent = { host: "127.0.0.1", port, hostKeyFingerprint: fp };
  const conn = new ParentConnection({ parent, userKeyPath: key, connectTimeoutMs: 10_000, log: silentLogger() });
  // The route a level takes (level-wiring): the OpenSSH client when one is installed.
  const sshPath = findOpenSsh();
  const openssh = parentOpenSshRoute({ sshPath, conn, parent, userKeyPath: key, connectTimeoutMs: 10_000 });
  // The cut ends the link whichever route moves the bytes: the ssh2 connection, and the ssh process (the signal).
  const cutter = new AbortController();
  const digests = new ImageDigests(`${dest}.digests.json`, silentLogger());
  const t0 = performance.now();
  let cutDone = false;
  try {
    const r = await fetchImage({
      conn, name: "img", dest, expectedSha256: "", digests, commandTimeoutMs: 600_000, signal: cutter.signal, ...(openssh ? { openssh } : {}), log: silentLogger(), now: () => Date.now(),
      progressIntervalMs: cut > 0 ? 0 : 500,
      onProgress: (p) => { if (cut > 0 && !cutDone && p.done >= p.total * cut) { cutDone = true; conn.close(); cutter.abort(); } },
    });
    process.send!({ ms: performance.now() - t0, bytes: r.bytes, resumedFrom: r.resumedFrom, rss: maxRssMiB(), cpu: cpuS(), route: openssh ? `openssh (${sshPath})` : "ssh2" });
  } catch (err) {
    const partial = await stat(`${dest}.partial`).then((s) => s.size, () => 0);
    process.send!({ ms: performance.now() - t0, error: (err as { code?: string }).code, partial, rss: maxRssMiB() });
  } finally {
    conn.close();
  }
}

function child(args: string[]): { proc: ChildProcess; next: () => Promise<Record<string, any>> } {
  // Profiling only (either changes the figures): HSD_BENCH_PROF_DIR, a --cpu-prof of each child there;
  // HSD_BENCH_SERVE_ARGS, more node flags for the serving child (e.g. --trace-gc).
  const prof = process.env.HSD_BENCH_PROF_DIR ? ["--cpu-prof", "--cpu-prof-dir", process.env.HSD_BENCH_PROF_DIR] : [];
  const extra = args[0] === "serve" ? (process.env.HSD_BENCH_SERVE_ARGS ?? "").split(" ").filter(Boolean) : [];
  // Both sides run in an hsd, so each child sets the daemon's own V8 flags (at its start, below).
  const proc = spawn(process.execPath, [...prof, ...extra, "--import", "tsx", SELF, ...args], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const queue: Record<string, any>[] = [];
  let wake: (() => void) | undefined;
  proc.on("message", (m) => { queue.push(m as Record<string, any>); wake?.(); });
  const next = async () => {
    while (queue.length === 0) {
      await new Promise<void>((r, j) => { wake = r; proc.once("exit", (c) => j(new Error(`bench child exited ${c}`))); });
    }
    return queue.shift()!;
  };
  return { proc, next };
}

async function writeImage(path: string, bytes: number): Promise<string> {
  const h = createHash("sha256");
  const out = createWriteStream(path);
  const block = randomBytes(4 * MIB);
  for (let left = bytes; left > 0; left -= block.length) {
    const b = left >= block.length ? block : block.subarray(0, left);
    // Vary each block so nothing compresses or dedups.
    b.writeUInt32LE(left, 0);
    h.update(b);
    if (!out.write(b)) await new Promise<void>((r) => out.once("drain", () => r()));
  }
  await new Promise<void>((r, j) => out.end((e?: Error) => (e ? j(e) : r())));
  return h.digest("hex");
}

async function sshdBaseline(dir: string, image: string, bytes: number): Promise<number> {
  const sshDir = join(dir, "sshd");
  await mkdir(sshDir, { mode: 0o700 });
  spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(sshDir, "host")]);
  spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(sshDir, "client")]);
  await writeFile(join(sshDir, "authorized_keys"), await import("node:fs/promises").then((f) => f.readFile(join(sshDir, "client.pub"))), { mode: 0o600 });
  await mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  const port = await freePort();
  await writeFile(join(sshDir, "sshd_config"), [
    `Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${join(sshDir, "host")}`, `AuthorizedKeysFile ${join(sshDir, "authorized_keys")}`,
    "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin yes", `PidFile ${join(sshDir, "pid")}`,
  ].join("\n") + "\n");
  const sshd = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(sshDir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
  try {
    await new Promise<void>((r, j) => {
      sshd.stderr!.on("data", (d: Buffer) => { if (d.toString().includes("listening")) r(); });
      sshd.once("exit", (c) => j(new Error(`sshd exited ${c}`)));
    });
    const out = join(dir, "ssh-copy.img");
    const t0 = performance.now();
    const r = spawnSync("sh", ["-c", `ssh -q -p ${port} -i ${join(sshDir, "client")} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes root@127.0.0.1 cat ${image} > ${out}`]);
    const ms = performance.now() - t0;
    if (r.status !== 0) throw new Error(`ssh cat failed: ${r.stderr.toString()}`);
    if ((await stat(out)).size !== bytes) throw new Error("ssh cat: short copy");
    await rm(out);
    return ms;
  } finally {
    sshd.kill("SIGTERM");
  }
}

async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  return new Promise((r) => { const s = createServer(); s.listen(0, "127.0.0.1", () => { const p = (s.address() as { port: number }).port; s.close(() => r(p)); }); });
}

/** Two sizes so growth shows (the goals are the issue's, at 1 GiB); HSD_BENCH_IMAGE_MIB measures one size instead. */
async function main(): Promise<void> {
  const sizes = process.env.HSD_BENCH_IMAGE_MIB ? [Number(process.env.HSD_BENCH_IMAGE_MIB)] : [256, 1024];
  for (const mib of sizes) await measure(mib);
}

async function measure(mib: number): Promise<void> {
  const bytes = mib * MIB;
  const dir = await mkdtemp(join(tmpdir(), "hsd-bench-img-"));
  let server: ReturnType<typeof child> | undefined;
  try {
    const image = join(dir, "img.img");
    const sha = await writeImage(image, bytes);
    const childKeys = await loadOrCreateLevelKeys(join(dir, "l1", "keys"), { name: "l1" });
    server = child(["serve", join(dir, "l0"), image, childKeys.publicKey]);
    const { port, fp } = await server.next();

    const sshMs = await sshdBaseline(dir, image, bytes);
    const full = await child(["fetch", String(port), fp, childKeys.userKeyPath, join(dir, "l1", "img.img"), "0"]).next();
    if (full.error) throw new Error(`hsd transfer failed: ${full.error}`);
    const got = createHash("sha256");
    for await (const b of (await import("node:fs")).createReadStream(join(dir, "l1", "img.img"))) got.update(b as Buffer);
    if (got.digest("hex") !== sha) throw new Error("hsd transfer: sha256 differs");

    const resumeDest = join(dir, "l1b", "img.img");
    await mkdir(join(dir, "l1b"));
    const cut = await child(["fetch", String(port), fp, childKeys.userKeyPath, resumeDest, "0.5"]).next();
    const resumed = await child(["fetch", String(port), fp, childKeys.userKeyPath, resumeDest, "0"]).next();
    server.proc.send("stop");
    const srv = await server.next();

    const rate = (ms: number) => (bytes / MIB) / (ms / 1000);
    console.log(`image: ${mib} MiB`);
    console.log(`OpenSSH ssh cat: ${sshMs.toFixed(0)} ms, ${rate(sshMs).toFixed(1)} MiB/s`);
    console.log(`hsd endpoint:    ${full.ms.toFixed(0)} ms, ${rate(full.ms).toFixed(1)} MiB/s  -> ${(rate(full.ms) / rate(sshMs)).toFixed(2)}x OpenSSH (goal >= 0.80)`);
    console.log(`hsd route: ${full.route}; CPU: fetching hsd ${full.cpu.toFixed(2)} s (full transfer), serving hsd ${srv.cpu.toFixed(2)} s (all three transfers; ${srv.gc.major} full GCs, ${srv.gc.ms.toFixed(0)} ms)`);
    console.log(`peak RSS: fetching hsd ${full.rss.toFixed(0)} MiB, serving hsd ${srv.rss.toFixed(0)} MiB (goal <= 150)`);
    console.log(`resume: cut at ${((cut.partial ?? 0) / bytes * 100).toFixed(1)}% (${cut.error}), re-run moved ${resumed.bytes} bytes = ${(resumed.bytes / bytes * 100).toFixed(1)}% (goal <= 55%), from offset ${resumed.resumedFrom}`);
  } finally {
    // A profiled server writes its profile as it exits: give it the moment.
    if (server && process.env.HSD_BENCH_PROF_DIR && server.proc.exitCode === null) await new Promise((r) => { server!.proc.once("exit", r); setTimeout(r, 5000); });
    if (server && server.proc.exitCode === null) server.proc.kill();
    await rm(dir, { recursive: true, force: true });
  }
}

const [mode, ...rest] = process.argv.slice(2);
// A child runs hsd's code as hsd does: with the daemon's V8 flags (src/config/node-flags.ts).
if (mode === "serve" || mode === "fetch") setFlagsFromString(HSD_V8_FLAGS.join(" "));
if (mode === "serve") await serve(rest[0]!, rest[1]!, rest[2]!);
else if (mode === "fetch") { await fetch(Number(rest[0]), rest[1]!, rest[2]!, rest[3]!, Number(rest[4])); process.exit(0); }
else await main();
