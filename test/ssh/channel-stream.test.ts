// ChannelStream over a real SSH connection (ssh2 server in this process, the
// level's ParentConnection as client): a consumer that stops reading holds
// the sender at the window, not in memory, and then still gets every byte;
// a command that never finishes fails at its timeout, a cancelled one with
// Cancelled, both typed and with the failure on `signal` for other waiters.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import ssh2, { type ServerChannel } from "ssh2";
import { tempDir, makeKeyPair } from "../helpers/git-fixtures.js";
import { ParentConnection } from "../../src/ssh/parent-connection.js";
import { ChannelStream, DEFAULT_HIGH_WATER_MARK } from "../../src/ssh/channel-stream.js";
import { generateEd25519KeyPair } from "../../src/ssh/level-keys.js";
import { privateKeyFingerprint } from "../../src/ssh/key-fingerprint.js";
import { silentLogger } from "../../src/log/logger.js";
import { HsError } from "../../src/domain/errors.js";

const MiB = 1024 * 1024;
/** ssh2's channel buffer and window are 2 MiB each: what may be in flight beyond our queue. */
const IN_FLIGHT_BOUND = DEFAULT_HIGH_WATER_MARK + 2 * MiB + 2 * MiB + 64 * 1024;

/** What the server's producer is doing, so the test can wait on real conditions. */
const producer = { sent: 0, blocked: false, onBlocked: undefined as (() => void) | undefined };

let server: InstanceType<typeof ssh2.Server>;
let conn: ParentConnection;
let cleanup: () => Promise<void>;

function block(n: number): Buffer {
  const b = Buffer.alloc(64 * 1024);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32BE((n * 16411 + i) >>> 0, i);
  return b;
}

/** "produce N": N bytes in 64 KiB blocks, honouring backpressure; "hang": nothing, never exits. */
async function serve(ch: ServerChannel, command: string): Promise<void> {
  ch.on("error", () => {});
  const m = /^produce (\d+)$/.exec(command);
  if (!m) return; // hang
  const total = Number(m[1]);
  producer.sent = 0;
  for (let n = 0; producer.sent < total; n++) {
    const b = block(n).subarray(0, Math.min(64 * 1024, total - producer.sent));
    producer.sent += b.length;
    if (!ch.write(b)) {
      producer.blocked = true;
      producer.onBlocked?.();
      await new Promise((r) => ch.once("drain", r));
      producer.blocked = false;
    }
  }
  ch.exit(0);
  ch.end();
}

before(async () => {
  const t = await tempDir("hsd-chan-");
  const hostKey = generateEd25519KeyPair("host").private;
  const user = await makeKeyPair(t.path, "user");
  server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
    client.on("error", () => {});
    client.on("authentication", (ctx) => (ctx.method === "publickey" ? ctx.accept() : ctx.reject(["publickey"])));
    client.on("ready", () => client.on("session", (accept) => {
      accept().on("exec", (acc, _rej, info) => void serve(acc(), info.command));
    }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  conn = new ParentConnection({
    parent: { host: "127.0.0.1", port, hostKeyFingerprint: privateKeyFingerprint(hostKey) },
    privateKey: user.privateKey, connectTimeoutMs: 10_000, log: silentLogger(),
  });
  await conn.connect();
  cleanup = t.cleanup;
});

after(async () => {
  conn?.close();
  await new Promise((r) => server?.close(r));
  await cleanup?.();
});

test("a consumer that stops reading holds the sender at the window, then receives every byte in order", async () => {
  const total = 40 * MiB;
  const s = await ChannelStream.exec(conn, `produce ${total}`, { commandTimeoutMs: 120_000, label: "produce" });
  const first = await s.read();
  assert.ok(first && first.length > 0);
  // Stop reading: the producer must block on the channel, with only a bounded amount past our queue.
  await new Promise<void>((r) => { if (producer.blocked) r(); else producer.onBlocked = r; });
  producer.onBlocked = undefined;
  assert.ok(s.bytes <= IN_FLIGHT_BOUND, `received ${s.bytes} bytes while not reading`);
  assert.ok(producer.sent < total, "the producer was held back");
  const h = createHash("sha256").update(first);
  let n = first.length;
  for await (const b of s) { h.update(b); n += b.length; }
  await s.closed();
  assert.equal(n, total);
  assert.equal(s.exitCode, 0);
  const want = createHash("sha256");
  for (let i = 0, left = total; left > 0; i++) { const b = block(i).subarray(0, Math.min(64 * 1024, left)); want.update(b); left -= b.length; }
  assert.equal(h.digest("hex"), want.digest("hex"));
});

test("a command that never finishes fails at its command timeout with CommandTimeout; signal carries it", async () => {
  const s = await ChannelStream.exec(conn, "hang", { commandTimeoutMs: 300, label: "hang", details: { what: "test" } });
  await assert.rejects(s.read(), (err: unknown) => err instanceof HsError && err.code === "CommandTimeout" && err.details.what === "test");
  assert.equal(s.signal.aborted, true);
  assert.equal((s.signal.reason as HsError).code, "CommandTimeout");
  await s.closed(); // the channel is torn down, not left open
});

test("a stalled reader still fails at the timeout and the channel closes with data unread", async () => {
  const s = await ChannelStream.exec(conn, `produce ${64 * MiB}`, { commandTimeoutMs: 1_000, label: "produce" });
  assert.ok(await s.read());
  await s.closed(); // unread data must not keep the channel open past the timeout
  assert.equal(s.error?.code, "CommandTimeout");
  const atTimeout = Number(s.error?.details.bytes);
  assert.ok(atTimeout > 0 && atTimeout <= IN_FLIGHT_BOUND, `received ${atTimeout} bytes by the timeout while not reading`);
  await assert.rejects(s.read(), (err: unknown) => err instanceof HsError && err.code === "CommandTimeout");
});

test("an abort signal ends the command with Cancelled", async () => {
  const ac = new AbortController();
  const s = await ChannelStream.exec(conn, "hang", { commandTimeoutMs: 60_000, label: "hang", signal: ac.signal });
  const pending = s.read();
  ac.abort();
  await assert.rejects(pending, (err: unknown) => err instanceof HsError && err.code === "Cancelled");
  await s.closed();
});
