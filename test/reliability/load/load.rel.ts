// R3: load on real hsd processes. (1) 20 readers, each with its own key
// authorized as a reader, fetch the whole repo set from one level at once
// (isomorphic-git over the SSH transport, syncFromParent): all succeed and the
// upload-pack cap (ssh.max_upload_packs: 4 here) is honoured by queueing, not
// refusing (seen in the endpoint's own debug log); peak RSS is a figure.
// (2) 200 concurrent Status calls on one hsd all succeed. (3) A leaf emits
// 1000 events/s (2 s in CI, 10 s with HSD_RELIABILITY_LONG=1) in its configure
// phase; every one reaches `hsctl nest --json` three levels up, in order.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "../../../src/rpc/client.js";
import { AccessService, KeyRole, NestService } from "../../../src/gen/homestak/nest/v1/nest_pb.js";
import { syncFromParent } from "../../../src/git/sync-from-parent.js";
import { silentLogger } from "../../../src/log/logger.js";
import { hsctl, jsonLines, hsdProcessesUnder } from "../../helpers/hsctl.js";
import { LONG } from "../lib/prng.js";
import { figure } from "../lib/figures.js";
import { startLevel0, type Level0 } from "../lib/daemon.js";
// ssh2's own generator emits a malformed key about 1 time in 128; this one retries.
import { generateEd25519KeyPair } from "../../../src/ssh/level-keys.js";

const READERS = 20;
const MAX_UPLOAD_PACKS = 4;
const REPOS = ["bootstrap", "ansible", "iac-driver", "tofu", "packer", "site-config"];
const STATUS_CALLS = 200;
const EVENT_RATE = 1000; // per second: one every ms
const EVENT_SECONDS = LONG ? 10 : 2;
const EVENTS = EVENT_RATE * EVENT_SECONDS;

let root = "";
let l0: Level0 | undefined;
const nestRoot = () => join(root, "nest-l0");

before(async () => {
  root = await mkdtemp(join(tmpdir(), "hsd-rel-load-"));
  l0 = await startLevel0(join(root, "l0"), "", {}, {
    ssh: `  max_upload_packs: ${MAX_UPLOAD_PACKS}\n  queue_timeout: 120s\n`, logLevel: "debug",
  });
  // Level 0 exports its repos on sync; then there is something to fetch.
  const nest = createClient(NestService, l0.ready.socket);
  for await (const _ of nest.sync({ recursive: false })) { /* drain */ }
  nest.close();
});

after(async () => {
  await l0?.hsd.kill();
  await hsctl(["destroy"], { HSD_ROOT: nestRoot() }, 120_000).catch(() => undefined);
  for (const pid of await hsdProcessesUnder(root)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  if (process.env.HSD_RELIABILITY_KEEP !== "1") await rm(root, { recursive: true, force: true });
});

type LogLine = { msg?: string; active?: number; queued?: number; code?: string };
function logLines(s: string): LogLine[] {
  return s.split("\n").filter((l) => l.startsWith("{")).map((l) => { try { return JSON.parse(l) as LogLine; } catch { return {}; } });
}

test(`${READERS} readers fetch the whole repo set at once: all succeed, the upload-pack cap queues rather than refuses`, async () => {
  const lvl = l0!;
  const access = createClient(AccessService, lvl.ready.socket);
  const readers = await Promise.all(Array.from({ length: READERS }, async (_, i) => {
    const kp = generateEd25519KeyPair("hsd-rel-test");
    const dir = join(root, `reader-${i}`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const keyPath = join(dir, "id_ed25519");
    await writeFile(keyPath, kp.private, { mode: 0o600 });
    await access.addKey({ key: { publicKey: kp.public, role: KeyRole.READER, comment: `load reader ${i}` } });
    return { dir, keyPath };
  }));
  access.close();

  const t0 = performance.now();
  const results = await Promise.allSettled(readers.map((r) => syncFromParent({
    parent: { host: "127.0.0.1", port: lvl.ready.sshPort, hostKeyFingerprint: lvl.ready.hostKeyFingerprint },
    userKeyPath: r.keyPath, repoNames: REPOS, exportsDir: join(r.dir, "repos"), workDir: join(r.dir, "work"),
    connectTimeoutMs: 10_000, commandTimeoutMs: 300_000, log: silentLogger(),
  })));
  const seconds = (performance.now() - t0) / 1000;
  const failed = results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason?.code ?? (r as PromiseRejectedResult).reason));
  const ok = results.length - failed.length;
  const rss = await lvl.rssPeakKb();
  figure("load.fetch.readers_ok", `${ok}/${READERS}`, `${REPOS.length} repos each, ${seconds.toFixed(1)} s`);
  figure("load.fetch.peak_rss_kb", rss, "serving hsd VmHWM");
  assert.deepEqual(failed, []);
  for (const r of results) {
    assert.equal(r.status, "fulfilled");
    assert.deepEqual((r as PromiseFulfilledResult<{ repos: { name: string }[] }>).value.repos.map((x) => x.name).sort(), [...REPOS].sort());
  }

  const lines = logLines(lvl.hsd.stdout()); // pino writes to stdout
  const started = lines.filter((l) => l.msg === "upload-pack started");
  const queued = lines.filter((l) => l.msg === "upload-pack queued");
  const refused = lines.filter((l) => l.msg === "exec refused");
  const peak = Math.max(...started.map((l) => l.active ?? Infinity));
  figure("load.fetch.upload_packs", started.length, `peak active ${peak} (cap ${MAX_UPLOAD_PACKS}), ${queued.length} queued, ${refused.length} refused`);
  assert.equal(started.length, READERS * REPOS.length, "every fetch ran exactly one upload-pack");
  assert.ok(peak <= MAX_UPLOAD_PACKS, `peak active upload-packs ${peak} > cap ${MAX_UPLOAD_PACKS}`);
  assert.ok(queued.length > 0, "the load never reached the cap: nothing was queued");
  assert.deepEqual(refused.map((l) => l.code), []);
});

test(`${STATUS_CALLS} concurrent Status calls on one hsd all succeed`, async () => {
  const lvl = l0!;
  const client = createClient(NestService, lvl.ready.socket);
  const t0 = performance.now();
  const res = await Promise.allSettled(Array.from({ length: STATUS_CALLS }, () => client.status({})));
  const ms = Math.round(performance.now() - t0);
  client.close();
  const ok = res.filter((r) => r.status === "fulfilled" && r.value.root?.name === "l0").length;
  const codes = res.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason?.code));
  figure("load.status.ok", `${ok}/${STATUS_CALLS}`, `${ms} ms for all`);
  assert.deepEqual(codes, []);
  assert.equal(ok, STATUS_CALLS);
  assert.equal(lvl.hsd.proc.exitCode, null);
});

test(`${EVENTS} events from level 3 (${EVENT_RATE}/s) reach hsctl three levels up, all and in order`, async () => {
  await mkdir(nestRoot(), { recursive: true, mode: 0o700 });
  await writeFile(join(nestRoot(), "hsd.yaml"), "log:\n  level: warn\n", { mode: 0o600 });
  const t0 = performance.now();
  const r = await hsctl(["nest", "--depth", "3", "--json"], { HSD_ROOT: nestRoot(), HSD_FAULTS: `l3:configure:emit-${EVENTS}x1` }, 600_000);
  const seconds = (performance.now() - t0) / 1000;
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
  const seqs: number[] = [];
  for (const e of jsonLines(r.stdout)) {
    if (e.level !== "l0/l1/l2/l3" || e.phase !== "configure" || e.kind !== "log") continue;
    const m = /^fault: event (\d+)\/(\d+)$/.exec(e.message ?? "");
    if (m && Number(m[2]) === EVENTS) seqs.push(Number(m[1]));
  }
  let outOfOrder = 0;
  for (let i = 1; i < seqs.length; i++) if (seqs[i]! <= seqs[i - 1]!) outOfOrder++;
  const lost = EVENTS - new Set(seqs).size;
  figure("load.events.relayed", `${seqs.length}/${EVENTS}`, `lost ${lost}, out of order ${outOfOrder}, nest ${seconds.toFixed(1)} s`);
  assert.equal(lost, 0);
  assert.equal(outOfOrder, 0);
  assert.deepEqual(seqs, Array.from({ length: EVENTS }, (_, i) => i + 1));
});
