// R4, wire part: random bytes and hostile-but-valid messages sent to every
// NestService/AccessService method of a real hsd through a raw grpc-js
// client with identity serializers. Expected: every call ends OK or with a
// gRPC status carrying an hs-code trailer other than Internal; the daemon is
// still serving afterwards. Requests that would really build, shut down or
// mass-sync the level are rewritten into rejected ones (counted).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { AccessService, NestService } from "../../../src/gen/homestak/nest/v1/nest_pb.js";
import { Rng, caseCount, seed } from "../lib/prng.js";
import { figure } from "../lib/figures.js";
import { startLevel0, type Level0 } from "../lib/daemon.js";

const N = caseCount(1000);
let root = "";
let l0: Level0;

before(async () => {
  root = await mkdtemp(join(tmpdir(), "hsd-rel-grpc-"));
  l0 = await startLevel0(join(root, "l0"), "nest:\n  max_depth: 4\n  max_width: 2\n");
});
after(async () => {
  await l0?.hsd.kill();
  await rm(root, { recursive: true, force: true });
});

type Outcome = { code: number; hsCode?: string; details?: string };

function call(client: grpc.Client, path: string, streaming: boolean, payload: Buffer): Promise<Outcome> {
  const id = (b: Buffer) => b;
  const deadline = Date.now() + 30_000;
  return new Promise((resolve) => {
    const done = (err: grpc.ServiceError | null) => resolve(err
      ? { code: err.code, hsCode: err.metadata?.get("hs-code")[0] as string | undefined, details: err.details }
      : { code: grpc.status.OK });
    if (!streaming) {
      client.makeUnaryRequest(path, id, id, payload, new grpc.Metadata(), { deadline }, (err) => done(err));
      return;
    }
    const s = client.makeServerStreamRequest(path, id, id, payload, new grpc.Metadata(), { deadline });
    let settled = false;
    s.on("data", () => {});
    s.on("error", (err: grpc.ServiceError) => { if (!settled) { settled = true; done(err); } });
    s.on("status", (st: grpc.StatusObject) => { if (!settled && st.code === grpc.status.OK) { settled = true; done(null); } });
  });
}

/** Hostile-but-well-formed field values for a message schema. */
function hostile(rng: Rng, schema: DescMessage): Buffer {
  const init: Record<string, unknown> = {};
  for (const f of schema.fields) {
    if (!rng.chance(0.7)) continue;
    if (f.fieldKind === "scalar") {
      switch (f.scalar) {
        case 9: init[f.localName] = rng.chance(0.2) ? "y".repeat(rng.pick([65 * 1024, 1024 * 1024, 3 * 1024 * 1024])) : rng.chance(0.3) ? "a: &x [*x]\nb: *y\n" : rng.str(); break; // string
        case 8: init[f.localName] = rng.chance(0.5); break; // bool
        default: init[f.localName] = rng.pick([0, 1, 2, 7, 8, 9, 64, 2 ** 31 - 1, 2 ** 32 - 1]);
      }
    } else if (f.fieldKind === "enum") {
      init[f.localName] = rng.pick([0, 1, 2, 3, 99, 2 ** 31 - 1]);
    } else if (f.fieldKind === "message") {
      init[f.localName] = fromBinary(f.message, hostile(rng, f.message));
    }
  }
  try {
    return Buffer.from(toBinary(schema, create(schema, init as never)));
  } catch {
    return Buffer.alloc(0);
  }
}

/** Negative int32 on the wire (10-byte varint) for field 1: "depth < 0". */
const NEGATIVE_DEPTH = Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
/** Field 1 with the wrong wire type (length-delimited where a varint is expected). */
const WRONG_TYPE = Buffer.from([0x0a, 0x03, 0x61, 0x62, 0x63]);

/** The server's receive limit (src/api/server.ts); bigger requests are refused by grpc-js itself, with RESOURCE_EXHAUSTED. */
const MAX_RECEIVE = 4 * 1024 * 1024;

test("random and hostile gRPC requests: typed rejections only, daemon still serving", async () => {
  const client = new grpc.Client(`unix://${l0.ready.socket}`, grpc.credentials.createInsecure());
  const methods = [NestService, AccessService].flatMap((s) => (s as unknown as DescService).methods);
  const costly = new Map<string, number>(); // valid requests that do real work: a few only
  const rewritten = { n: 0 };
  const bad: { method: string; outcome: Outcome; payload: string }[] = [];
  const codes = new Map<string, number>();
  let next = 0;
  // Each case draws from its own generator (seed, case index), so a case is the
  // same whatever order the 8 workers' calls complete in: replayable by seed.
  const one = async (i: number) => {
    const rng = new Rng((seed() + 10 + Math.imul(i + 1, 0x9e3779b1)) >>> 0);
    const m = methods[rng.int(methods.length)]!;
    const r = rng.int(10);
    let payload = r < 3 ? rng.bytes(rng.len(256)) : r < 6 ? rng.mutate(hostile(rng, m.input)) : r < 9 ? hostile(rng, m.input) : rng.pick([NEGATIVE_DEPTH, WRONG_TYPE]);
    let msg: Record<string, unknown> | undefined;
    try { msg = fromBinary(m.input, payload) as unknown as Record<string, unknown>; } catch { msg = undefined; }
    if (msg) {
      const name = m.name;
      const work = name === "Nest" ? Number(msg.depth) >= 0 && Number(msg.depth) <= 4 && Number(msg.width) <= 2 && [0, 1].includes(Number(msg.isolation)) && ["", "local"].includes(String(msg.provider))
        : name === "Destroy" ? msg.self === true
        : ["Sync", "Configure", "Doctor"].includes(name);
      if (work && (name === "Nest" || name === "Destroy" || (costly.get(name) ?? 0) >= 3)) {
        // Would build a level or stop this daemon: make it a request that must be rejected instead.
        payload = name === "Nest" ? Buffer.concat([payload, Buffer.from([0x08, 0x09])]) : Buffer.concat([payload, Buffer.from([0x00])]);
        rewritten.n++;
      } else if (work) costly.set(name, (costly.get(name) ?? 0) + 1);
      if (name === "Logs" && msg.follow === true) {
        // A follow streams until cancelled, by design: give it a level path that must be rejected instead.
        payload = Buffer.concat([payload, Buffer.from([0x0a, 0x01, 0x21])]);
        rewritten.n++;
      }
    }
    const out = await call(client, `/${m.parent.typeName}/${m.name}`, m.methodKind === "server_streaming", payload);
    const key = `${grpc.status[out.code]}/${out.hsCode ?? "-"}`;
    codes.set(key, (codes.get(key) ?? 0) + 1);
    // Over the receive limit, grpc-js refuses before hsd sees it (the next test): a typed gRPC status, not a handler failure.
    const overLimit = payload.length > MAX_RECEIVE && out.code === grpc.status.RESOURCE_EXHAUSTED;
    if (out.code !== grpc.status.OK && !overLimit && (!out.hsCode || out.hsCode === "Internal")) {
      bad.push({ method: m.name, outcome: out, payload: payload.subarray(0, 64).toString("hex") });
    }
  };
  const worker = async () => { while (next < N) await one(next++); };
  await Promise.all(Array.from({ length: 8 }, worker));

  assert.equal(l0.hsd.proc.exitCode, null, `hsd exited: ${l0.hsd.stderr().slice(-2000)}`);
  const st = await call(client, "/homestak.nest.v1.NestService/Status", false, Buffer.alloc(0));
  assert.equal(st.code, grpc.status.OK, "daemon no longer serving Status");
  client.close();
  figure("fuzz.grpc.cases", N, `${rewritten.n} rewritten to avoid real builds; outcomes ${JSON.stringify(Object.fromEntries(codes))}`);
  figure("fuzz.grpc.rss_peak_kb", await l0.rssPeakKb());
  assert.deepEqual(bad.slice(0, 10), [], `${bad.length} calls failed without a typed hs-code`);
});

test("a request over the 4 MiB receive limit is refused by grpc-js and the daemon goes on", async () => {
  const client = new grpc.Client(`unix://${l0.ready.socket}`, grpc.credentials.createInsecure());
  const out = await call(client, "/homestak.nest.v1.NestService/PutSecrets", false, Buffer.concat([Buffer.from([0x0a, 0x80, 0x80, 0x80, 0x03]), Buffer.alloc(6 * 1024 * 1024, 0x61)]));
  assert.equal(out.code, grpc.status.RESOURCE_EXHAUSTED);
  const st = await call(client, "/homestak.nest.v1.NestService/Status", false, Buffer.alloc(0));
  assert.equal(st.code, grpc.status.OK);
  client.close();
});
