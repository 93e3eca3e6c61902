// coalesceWrites on a real TCP pair over loopback: a tick's writes are held
// (the socket corked) until the tick ends, then leave together, every byte in
// order; nothing stays held past the tick.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect, type Socket } from "node:net";
import { once } from "node:events";
import { coalesceWrites } from "../../src/ssh/coalesce-writes.js";

test("the writes of one tick are corked together and released when the tick ends, in order", async () => {
  const received: Buffer[] = [];
  let peer!: Socket;
  let want = Infinity;
  let gotAll!: () => void;
  const all = new Promise<void>((r) => { gotAll = r; });
  const server = createServer((s) => {
    peer = s;
    s.on("data", (d: Buffer) => { received.push(d); if (Buffer.concat(received).length >= want) gotAll(); });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const sock = coalesceWrites(connect((server.address() as { port: number }).port, "127.0.0.1"));
  try {
    await once(sock, "connect");
    const parts = [Buffer.alloc(40_000, 1), Buffer.alloc(40_000, 2), Buffer.from("end")];
    for (const p of parts) sock.write(p);
    assert.equal(sock.writableCorked, 1, "held while the tick that wrote runs");
    await new Promise((r) => process.nextTick(r));
    assert.equal(sock.writableCorked, 0, "released once it ended");
    want = parts.reduce((n, p) => n + p.length, 0);
    if (Buffer.concat(received).length >= want) gotAll();
    await Promise.race([all, new Promise((_, reject) => setTimeout(() => reject(new Error("the peer did not get every byte")), 10_000).unref())]);
    assert.ok(Buffer.concat(received).equals(Buffer.concat(parts)));
    // A later tick's write is corked on its own, and released too.
    sock.write("again");
    assert.equal(sock.writableCorked, 1);
    await new Promise((r) => process.nextTick(r));
    assert.equal(sock.writableCorked, 0);
  } finally {
    sock.destroy();
    peer?.destroy();
    server.close();
  }
});
