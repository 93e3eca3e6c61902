// The endpoint drops a peer that stops answering (a cut link): its keepalive
// probes go unanswered and it ends the connection, which is how a child level
// notices that its parent is gone. A TCP proxy between client and endpoint
// is "cut" by no longer forwarding anything in either direction.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect, type Socket } from "node:net";
import ssh2 from "ssh2";
import { startLevel0 } from "../helpers/git-fixtures.js";

test("a peer behind a cut link is dropped by the endpoint's keepalive", async () => {
  const l0 = await startLevel0({ keepaliveIntervalMs: 200 });
  let cut = false;
  let upstream: Socket | undefined;
  const upstreamClosed = new Promise<void>((resolve) => {
    const proxy = createServer((down) => {
      const up = connect(l0.port, "127.0.0.1");
      upstream = up;
      down.on("data", (b) => { if (!cut) up.write(b); });
      up.on("data", (b) => { if (!cut) down.write(b); });
      up.on("close", () => { resolve(); down.destroy(); });
      down.on("error", () => {});
      up.on("error", () => {});
    });
    proxy.listen(0, "127.0.0.1", () => {
      const port = (proxy.address() as { port: number }).port;
      const c = new ssh2.Client();
      c.on("error", () => {});
      c.on("ready", () => { cut = true; });
      c.connect({ host: "127.0.0.1", port, username: "hsd", privateKey: l0.controller.privateKey, strictVendor: false });
      void upstreamClosed.finally(() => { c.destroy(); proxy.close(); });
    });
  });
  try {
    // Bounded: without keepalive the endpoint would hold the dead connection forever.
    const outcome = await Promise.race([
      upstreamClosed.then(() => "dropped"),
      new Promise((r) => setTimeout(() => r("still connected"), 15_000).unref()),
    ]);
    assert.equal(cut, true, "the SSH session never became ready");
    assert.equal(outcome, "dropped");
  } finally {
    upstream?.destroy();
    await l0.close();
  }
});
