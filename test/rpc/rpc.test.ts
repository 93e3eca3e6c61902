// The protobuf-es <-> grpc-js adapter and typed client, over a real unix socket:
// the four method kinds, cancellation, deadlines, typed error round-trip and
// parent propagation.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { createClient, type Client } from "../../src/rpc/client.js";
import { toServiceDefinition, toServiceImpl, type HandlerContext, type MethodsOf } from "../../src/rpc/service-definition.js";
import { HsError, InvalidArgumentError, PhaseTimeoutError, RepoNotFoundError } from "../../src/domain/errors.js";
import { withTimeout } from "../../src/util/timeout.js";
import { EchoService } from "./echo-service.js";

const WAIT_MS = 10_000;
const waitTimeout = () => new HsError("test wait timed out");
/** Resolves when the signal aborts (with its reason). */
const aborted = (signal: AbortSignal) =>
  new Promise<unknown>((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    signal.addEventListener("abort", () => resolve(signal.reason), { once: true });
  });

/** Deferred records of server-side handlers, keyed by a note the test chooses: started, then aborted. */
interface Rec { started: Promise<void>; start: () => void; promise: Promise<unknown>; resolve: (v: unknown) => void }
const serverAborts = new Map<string, Rec>();
function abortRecord(note: string): Rec {
  let rec = serverAborts.get(note);
  if (!rec) {
    let resolve!: (v: unknown) => void;
    let start!: () => void;
    const promise = new Promise<unknown>((r) => { resolve = r; });
    const started = new Promise<void>((r) => { start = r; });
    rec = { promise, resolve, started, start };
    serverAborts.set(note, rec);
  }
  return rec;
}
const watch = (note: string, ctx: HandlerContext) => {
  const rec = abortRecord(note);
  rec.start();
  return aborted(ctx.signal).then((r) => rec.resolve(r));
};
const serverAbortOf = (note: string) => withTimeout(WAIT_MS, waitTimeout, () => abortRecord(note).promise);

let dir: string;
let server: grpc.Server;
let client: Client<MethodsOf<typeof EchoService>>;
let socket: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hsd-rpc-"));
  socket = join(dir, "t.sock");
  server = new grpc.Server();
  server.addService(toServiceDefinition(EchoService), toServiceImpl(EchoService, {
    async unary(req, ctx) {
      switch (req.note) {
        case "notfound": throw new RepoNotFoundError("no repo named tofu");
        case "invalid": throw new InvalidArgumentError("depth too big");
        case "crash": throw new Error("secret-ish internal detail");
        case "hang":
          await watch("hang", ctx);
          throw ctx.signal.reason;
        case "relay": {
          // Calls back into this server with the incoming call as parent.
          const inner = createClient(EchoService, socket);
          try {
            return await inner.unary({ n: req.n, note: `hang-${req.n}` }, { parent: ctx.call });
          } finally { inner.close(); }
        }
        default:
          if (req.note.startsWith("hang-")) {
            await watch(req.note, ctx);
            throw ctx.signal.reason;
          }
          return { n: req.n * 2, note: `deadline:${ctx.deadline === undefined ? "none" : "set"}` };
      }
    },
    async *count(req, ctx) {
      if (req.note === "forever") {
        void watch("forever", ctx);
        for (let i = 0; !ctx.signal.aborted; i++) {
          yield { n: i };
          // Yield to the event loop so cancellation can arrive.
          await new Promise((r) => setImmediate(r));
        }
        return;
      }
      for (let i = 0; i < req.n; i++) yield { n: i };
      if (req.note === "fail") throw new PhaseTimeoutError("sync over budget");
    },
    async sum(reqs) {
      let total = 0;
      for await (const r of reqs) total += r.n;
      return { n: total };
    },
    async *chat(reqs) {
      for await (const r of reqs) yield { n: r.n + 1, note: r.note };
    },
  }));
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  client = createClient(EchoService, socket);
});

after(async () => {
  client?.close();
  if (server) await new Promise<void>((r) => server.tryShutdown(() => r()));
  await rm(dir, { recursive: true, force: true });
});

test("unary round trip", async () => {
  const res = await client.unary({ n: 21 });
  assert.equal(res.n, 42);
  assert.equal(res.note, "deadline:none");
  const withDeadline = await client.unary({ n: 1 }, { deadlineMs: 30_000 });
  assert.equal(withDeadline.note, "deadline:set");
});

test("server streaming yields every message in order", async () => {
  const got: number[] = [];
  for await (const m of client.count({ n: 50 })) got.push(m.n);
  assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => i));
});

test("client streaming consumes every request", async () => {
  async function* nums() { for (let i = 1; i <= 100; i++) yield { n: i }; }
  const res = await client.sum(nums());
  assert.equal(res.n, 5050);
  assert.equal((await client.sum([])).n, 0);
});

test("bidi streaming echoes each request", async () => {
  const got: string[] = [];
  for await (const m of client.chat([{ n: 1, note: "a" }, { n: 2, note: "b" }, { n: 3, note: "c" }])) got.push(`${m.note}${m.n}`);
  assert.deepEqual(got, ["a2", "b3", "c4"]);
});

test("breaking out of a for-await cancels the server handler", async () => {
  let seen = 0;
  for await (const m of client.count({ note: "forever" })) {
    seen = m.n + 1;
    if (seen >= 3) break;
  }
  assert.equal(seen, 3);
  const reason = await serverAbortOf("forever");
  assert.ok(reason instanceof HsError);
  assert.equal(reason.code, "Cancelled");
});

test("aborting the signal cancels a stream with code Cancelled", async () => {
  const ac = new AbortController();
  const err = await (async () => {
    try {
      for await (const m of client.count({ note: "forever" }, { signal: ac.signal })) if (m.n === 2) ac.abort();
    } catch (e) { return e; }
    return undefined;
  })();
  assert.ok(err instanceof HsError);
  assert.equal(err.code, "Cancelled");
});

test("deadline exceeded becomes a typed error and aborts the handler", async () => {
  await assert.rejects(client.unary({ note: "hang" }, { deadlineMs: 100 }), (e: unknown) => {
    assert.ok(e instanceof HsError);
    assert.equal(e.code, "DeadlineExceeded");
    return true;
  });
  const reason = await serverAbortOf("hang");
  assert.equal((reason as HsError).code, "DeadlineExceeded");
});

test("HsError codes round-trip through the hs-code trailer", async () => {
  await assert.rejects(client.unary({ note: "notfound" }), (e: unknown) => {
    assert.ok(e instanceof HsError);
    assert.equal(e.code, "RepoNotFound");
    assert.equal(e.details.grpcStatus, grpc.status.NOT_FOUND);
    return true;
  });
  await assert.rejects(client.unary({ note: "invalid" }), (e: unknown) => {
    assert.equal((e as HsError).code, "InvalidArgument");
    assert.equal((e as HsError).details.grpcStatus, grpc.status.INVALID_ARGUMENT);
    return true;
  });
});

test("a non-HsError becomes Internal and its message stays on the server", async () => {
  await assert.rejects(client.unary({ note: "crash" }), (e: unknown) => {
    assert.equal((e as HsError).code, "Internal");
    assert.ok(!(e as Error).message.includes("secret-ish"));
    return true;
  });
});

test("a stream delivers its messages, then the handler's typed error", async () => {
  const got: number[] = [];
  await assert.rejects(async () => { for await (const m of client.count({ n: 3, note: "fail" })) got.push(m.n); },
    (e: unknown) => (e as HsError).code === "PhaseTimeout");
  assert.deepEqual(got, [0, 1, 2]);
});

test("parent propagation: the outer deadline reaches the inner call", async () => {
  await assert.rejects(client.unary({ n: 1, note: "relay" }, { deadlineMs: 150 }),
    (e: unknown) => (e as HsError).code === "DeadlineExceeded");
  const reason = await serverAbortOf("hang-1");
  assert.ok(reason instanceof HsError);
  assert.ok(["DeadlineExceeded", "Cancelled"].includes(reason.code));
});

test("parent propagation: cancelling the outer call cancels the inner one", async () => {
  const ac = new AbortController();
  const outer = client.unary({ n: 2, note: "relay" }, { signal: ac.signal });
  // Abort only once the inner call has reached its handler.
  await withTimeout(WAIT_MS, waitTimeout, () => abortRecord("hang-2").started);
  ac.abort();
  await assert.rejects(outer, (e: unknown) => (e as HsError).code === "Cancelled");
  const reason = await serverAbortOf("hang-2");
  assert.equal((reason as HsError).code, "Cancelled");
});

test("no server at the socket: DaemonUnreachable", async () => {
  const c = createClient(EchoService, join(dir, "nobody.sock"));
  try {
    await assert.rejects(c.unary({ n: 1 }), (e: unknown) => (e as HsError).code === "DaemonUnreachable");
  } finally { c.close(); }
});
