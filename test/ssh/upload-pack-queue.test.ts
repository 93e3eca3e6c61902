// The per-endpoint upload-pack cap: extra requests wait FIFO, and one waiting
// past queueTimeoutMs is answered with an ERR pkt-line and status 128.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startLevel0, connectRaw, execRaw } from "../helpers/git-fixtures.js";
import { readPkt } from "../../src/git/pkt-line.js";
import type { ClientChannel, Client } from "ssh2";

/** Opens upload-pack and resolves once its advertisement arrives (it then holds its slot until we flush). */
function holdSlot(c: Client, repo: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    c.exec(`git-upload-pack '${repo}'`, (err, ch) => {
      if (err) return reject(err);
      const t = setTimeout(() => reject(new Error("no advertisement")), 10_000);
      ch.once("data", () => { clearTimeout(t); resolve(ch); });
      ch.stderr.resume();
    });
  });
}

test("a request queued past queueTimeoutMs gets QueueTimeout as an ERR pkt-line", async () => {
  const l0 = await startLevel0({ maxUploadPacks: 1, queueTimeoutMs: 200 });
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    const held = await holdSlot(c, "tofu");
    assert.equal(l0.endpoint.stats().activeUploadPacks, 1);
    const r = await execRaw(c, "git-upload-pack 'packer'");
    assert.equal(r.code, 128);
    const p = readPkt(r.stdout);
    assert.ok(p && p.pkt.type === "data" && p.pkt.payload.subarray(0, 4).toString() === "ERR ");
    held.end("0000");
  } finally {
    c.end();
    await l0.close();
  }
});

test("queued requests are served in order once a slot frees", async () => {
  const l0 = await startLevel0({ maxUploadPacks: 1, queueTimeoutMs: 30_000 });
  const c = await connectRaw(l0.port, l0.reader.privateKey);
  try {
    const held = await holdSlot(c, "tofu");
    const order: string[] = [];
    const second = execRaw(c, "git-upload-pack 'packer'", { input: Buffer.from("0000") }).then((r) => { order.push("packer"); return r; });
    const third = execRaw(c, "git-upload-pack 'ansible'", { input: Buffer.from("0000") }).then((r) => { order.push("ansible"); return r; });
    // Wait (bounded) until both are queued before freeing the slot.
    const deadline = Date.now() + 10_000;
    while (l0.endpoint.stats().queued < 2) {
      assert.ok(Date.now() < deadline, "requests never queued");
      await new Promise((r) => setImmediate(r));
    }
    held.end("0000");
    const [r2, r3] = await Promise.all([second, third]);
    assert.equal(r2.code, 0);
    assert.equal(r3.code, 0);
    assert.deepEqual(order, ["packer", "ansible"]);
    assert.equal(l0.endpoint.stats().queued, 0);
  } finally {
    c.end();
    await l0.close();
  }
});
