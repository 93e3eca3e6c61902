// R6: crash-safe state files. The journal and the secrets store are killed
// (SIGKILL) over and over in the middle of writes, both exactly between fsync
// and rename (the beforeRename hook) and at random moments; the file must
// always be the old or the new version, parse, and never be empty or torn.
// Then a real hsd is killed inside a secrets write (HSD_FAULTS kill-once),
// and a level whose disk is full (a tmpfs) refuses writes with DiskFull.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm, readFile, readdir, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import * as grpc from "@grpc/grpc-js";
import { createClient, type Client } from "../../../src/rpc/client.js";
import { NestService } from "../../../src/gen/homestak/nest/v1/nest_pb.js";
import { HsError } from "../../../src/domain/errors.js";
import { Rng, seed, LONG } from "../lib/prng.js";
import { figure } from "../lib/figures.js";
import { startLevel0, type Level0 } from "../lib/daemon.js";
import { encodeLevelFiles } from "../../../src/homestak/site-config.js";

const CHILD = fileURLToPath(new URL("./writer-child.mjs", import.meta.url));
const KILLS = Number(process.env.HSD_RELIABILITY_KILLS) || (LONG ? 300 : 24);
const root = await mkdtemp(join(tmpdir(), "hsd-rel-files-"));
const mounts: string[] = [];
const daemons: Level0[] = [];
let torn = 0;

after(async () => {
  for (const d of daemons) await d.hsd.kill();
  for (const m of mounts) spawnSync("umount", ["-l", m]);
  // A git a killed daemon orphaned may still be finishing a write under root.
  await rm(root, { recursive: true, force: true, maxRetries: 5 });
  figure("files.torn", torn);
});

/** Runs the writer until it dies: killed by its own hook, or by us after `afterLines` acknowledged writes. */
function runWriter(kind: string, path: string, from: number, killAt: number, afterLines: number): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CHILD, kind, path, String(from), String(killAt)], { stdio: ["ignore", "pipe", "inherit"] });
    let last = from - 1;
    let buf = "";
    let lines = 0;
    p.stdout.setEncoding("utf8").on("data", (c: string) => {
      buf += c;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        last = Number(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (killAt === 0 && ++lines >= afterLines) p.kill("SIGKILL");
      }
    });
    p.on("close", () => resolve(last));
  });
}

function versionOf(kind: string, text: string): number {
  if (text.length === 0) throw new Error("empty file");
  if (kind === "journal") {
    const j = JSON.parse(text) as { version: number; configured: { durationMs: number } };
    assert.equal(j.version, 1);
    return j.configured.durationMs;
  }
  const s = parse(text) as { version: number; pad: string };
  assert.equal(typeof s.pad, "string");
  return s.version;
}

for (const kind of ["journal", "secrets"] as const) {
  test(`${kind}: ${KILLS} SIGKILLs mid-write leave the old or the new version, never a torn file`, async () => {
    const rng = new Rng(seed() + (kind === "journal" ? 20 : 21));
    const dir = join(root, kind);
    await mkdir(dir, { recursive: true });
    const path = join(dir, kind === "journal" ? "journal.json" : "secrets.yaml");
    let acked = await runWriter(kind, path, 1, 0, 1); // a first good version
    for (let i = 0; i < KILLS; i++) {
      const hook = rng.chance(0.5);
      const from = acked + 1;
      const last = await runWriter(kind, path, from, hook ? from + rng.int(5) : 0, 1 + rng.int(20));
      acked = Math.max(acked, last);
      let v: number;
      try {
        v = versionOf(kind, await readFile(path, "utf8"));
      } catch (err) {
        torn++;
        throw err;
      }
      // The file holds the last acknowledged version or the one in flight.
      if (v !== acked && v !== acked + 1) torn++;
      assert.ok(v === acked || v === acked + 1, `after kill ${i}: file has version ${v}, last acknowledged ${acked}`);
      acked = v;
    }
    const leftovers = (await readdir(dir)).filter((n) => n.endsWith(".tmp")).length;
    figure(`files.${kind}.kills`, KILLS, `${leftovers} temp files left by kills`);
  });
}

// A level below 0 (its parent is never dialled here): only such a level takes
// secrets, written to its homestak config/secrets.yaml.
const CHILD_YAML = "level: { name: l1, depth: 1 }\nparent: { host: 127.0.0.1, port: 9, host_key_fingerprint: \"SHA256:AAAA\", "
  + "public_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl parent\" }\n";
const put = (c: Client<typeof NestService.method>, secrets: Record<string, string>) => c.putSecrets({ yaml: encodeLevelFiles({ secrets }) });

test("a real hsd SIGKILLed inside a secrets write keeps the old secrets file; restarted, it writes the new one", async () => {
  const lroot = join(root, "kill-l1");
  const cfgDir = join(lroot, "homestak", "config");
  const file = join(cfgDir, "secrets.yaml");
  let l1 = await startLevel0(lroot, CHILD_YAML);
  daemons.push(l1);
  const c0 = createClient(NestService, l1.ready.socket);
  await put(c0, { canary: "old-value" });
  c0.close();
  await l1.hsd.kill();
  const before = await readFile(file, "utf8");
  l1 = await startLevel0(lroot, CHILD_YAML, { HSD_FAULTS: "l1:secrets-write:kill-once" });
  daemons.push(l1);
  const c = createClient(NestService, l1.ready.socket);
  await assert.rejects(put(c, { canary: "new-value" }), (e: HsError) => e.code === "PeerGone");
  c.close();
  const exited = await l1.hsd.exited;
  assert.equal(exited.signal, "SIGKILL");
  const after1 = await readFile(file, "utf8");
  if (after1 !== before) torn++;
  assert.equal(after1, before, "a killed write must leave the old file");
  const isTemp = (n: string) => /^\.secrets\.yaml\.[0-9a-f]{12}\.tmp$/.test(n);
  assert.equal((await readdir(cfgDir)).filter(isTemp).length, 1, "the kill left its temp file");
  l1 = await startLevel0(lroot, CHILD_YAML, { HSD_FAULTS: "l1:secrets-write:kill-once" });
  daemons.push(l1);
  assert.deepEqual((await readdir(cfgDir)).filter(isTemp), [], "startup removes the temp files of killed writes");
  figure("files.stale_temps_cleaned", "yes", "secrets temp left by a kill, removed at startup");
  const c2 = createClient(NestService, l1.ready.socket);
  assert.ok((await put(c2, { canary: "new-value" })).keys.includes("canary"));
  c2.close();
  assert.equal(parse(await readFile(file, "utf8")).canary, "new-value");
});

// Needs root for mount(8); CI runs as root.
test("a level whose disk is full refuses secrets writes with DiskFull and keeps its file intact", async () => {
  const lroot = join(root, "full");
  await mkdir(lroot, { recursive: true });
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", lroot]);
  assert.equal(m.status, 0, m.stderr?.toString());
  mounts.push(lroot);
  const l0 = await startLevel0(lroot, CHILD_YAML);
  daemons.push(l0);
  const file = join(lroot, "homestak", "config", "secrets.yaml");
  const c = createClient(NestService, l0.ready.socket);
  await put(c, { before: "full" });
  const before = await readFile(file, "utf8");
  // Fill what is left (tmpfs reports ENOSPC once its pages are used).
  const filler = join(lroot, "filler");
  const chunk = Buffer.alloc(64 * 1024, 1);
  await writeFile(filler, "");
  const fh = await import("node:fs/promises").then((fs) => fs.open(filler, "a"));
  try { for (;;) await fh.write(chunk); } catch (e) { assert.equal((e as NodeJS.ErrnoException).code, "ENOSPC"); } finally { await fh.close(); }
  await assert.rejects(put(c, { big: "z".repeat(32 * 1024) }), (e: HsError) => e.code === "DiskFull");
  const after1 = await readFile(file, "utf8");
  if (after1 !== before) torn++;
  assert.equal(after1, before);
  assert.deepEqual((await readdir(join(lroot, "homestak", "config"))).filter((n) => n.endsWith(".tmp")), []);
  assert.equal(l0.hsd.proc.exitCode, null, "hsd must survive a full disk");
  await rm(filler);
  assert.ok((await put(c, { after: "ok" })).keys.includes("after"));
  c.close();
  void grpc;
});
