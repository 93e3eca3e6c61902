import { test } from "node:test";
import assert from "node:assert/strict";
import { lstat, mkdtemp, mkdir, rm } from "node:fs/promises";
import { createServer, connect, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { reachableSocketPath } from "../../src/util/unix-socket-path.js";

const listen = (server: Server, path: string) => new Promise<void>((res, rej) => { server.once("error", rej); server.listen(path, () => res()); });
const echoOnce = (path: string) => new Promise<string>((res, rej) => {
  const s = connect(reachableSocketPath(path));
  s.setEncoding("utf8");
  s.on("data", (d: string) => { res(d); s.destroy(); });
  s.on("error", rej);
  s.write("ping");
});

test("a socket path longer than sun_path is bound and dialled where it is; a short one is left as is", async () => {
  const base = await mkdtemp(join(tmpdir(), "hsd-sockpath-"));
  try {
    const dir = join(base, "x".repeat(60), "state", "levels", "l3", "run");
    await mkdir(dir, { recursive: true });
    const path = join(dir, "hsd.sock");
    assert.ok(Buffer.byteLength(path) > 108);
    // (libuv silently truncates a path this long and binds somewhere else.)
    const server = createServer((c) => c.on("data", (d) => c.write(`pong:${d}`)));
    await listen(server, reachableSocketPath(path));
    try {
      assert.ok((await lstat(path)).isSocket(), "the socket lives at the path asked for");
      assert.equal(await echoOnce(path), "pong:ping");
    } finally {
      await new Promise((r) => server.close(r));
    }
    const short = join(base, "s.sock");
    assert.equal(reachableSocketPath(short), short);
    // The directory removed and made again (a level rebuilt): still reachable.
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const again = createServer((c) => c.on("data", (d) => c.write(`again:${d}`)));
    await listen(again, reachableSocketPath(path));
    try {
      assert.equal(await echoOnce(path), "again:ping");
    } finally {
      await new Promise((r) => again.close(r));
    }
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});
