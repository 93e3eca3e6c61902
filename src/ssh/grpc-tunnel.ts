// A parent's tunnel to a child's gRPC socket: one SSH connection (controller
// key, child host key pinned) and a private local unix socket whose every
// connection becomes a direct-tcpip channel to the child's hsd. grpc-js
// dials the local socket. When the SSH connection dies every tunnelled stream
// is cut at once, so a dead child surfaces as an immediate error, not a hang.
// Bytes move through channel-stream.ts's joinChannel, with backpressure both ways.
// hsctl --host serves its operator tunnel the same way (serveGrpcTunnel).
// Imported by: src/cli, src/daemon, src/ssh.

import { createServer, type Server, type Socket } from "node:net";
import { chmod, rm, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Logger } from "../log/logger.js";
import type { Client } from "ssh2";
import { ParentConnection, type ParentEndpoint } from "./parent-connection.js";
import { GRPC_VIRTUAL_HOST, GRPC_VIRTUAL_PORT } from "./ssh-endpoint.js";
import { reachableSocketPath } from "../util/unix-socket-path.js";
import { joinChannel } from "./channel-stream.js";

export interface GrpcTunnel {
  /** grpc-js target: "unix:///abs/path". */
  readonly target: string;
  close(): Promise<void>;
  /** Called once when the SSH connection goes away (child died, network cut). */
  onClose(cb: () => void): void;
}

export interface GrpcTunnelOptions {
  readonly endpoint: ParentEndpoint;
  readonly userKeyPath: string;
  /** Where the local socket lives (0700). */
  readonly socketDir: string;
  readonly name: string;
  readonly connectTimeoutMs: number;
  readonly log: Logger;
  readonly signal?: AbortSignal;
}

export async function openGrpcTunnel(o: GrpcTunnelOptions): Promise<GrpcTunnel> {
  const conn = new ParentConnection({ parent: o.endpoint, userKeyPath: o.userKeyPath, connectTimeoutMs: o.connectTimeoutMs, log: o.log });
  const client = await conn.connect(o.signal);
  return serveGrpcTunnel(client, { socketDir: o.socketDir, name: o.name, log: o.log }, () => conn.close());
}

/** Opens one direct-tcpip channel to the endpoint's gRPC target; refused for any key that is not a controller. */
export function openApiChannel(client: Client): Promise<import("ssh2").ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      client.forwardOut("127.0.0.1", 0, GRPC_VIRTUAL_HOST, GRPC_VIRTUAL_PORT, (err, ch) => (err ? reject(err) : resolve(ch)));
    } catch (err) {
      reject(err);
    }
  });
}

/**
 * Serves a private unix socket whose every connection becomes an API channel
 * over `client`; closing it (or the SSH connection dropping) closes both.
 */
export async function serveGrpcTunnel(client: Client, o: { socketDir: string; name: string; log: Logger }, closeConnection: () => void): Promise<GrpcTunnel> {
  await mkdir(o.socketDir, { recursive: true, mode: 0o700 });
  // A deep level's run dir can make this longer than sun_path: bound (here)
  // and dialled (the rpc client) through reachableSocketPath.
  const path = join(o.socketDir, `tunnel-${o.name}-${randomBytes(4).toString("hex")}.sock`);
  const sockets = new Set<Socket>();
  const closers: (() => void)[] = [];
  let closed = false;
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => sock.destroy());
    try {
      // direct-tcpip to the endpoint's fixed virtual target, which always means
      // the level's own gRPC socket (ssh2 clients only send streamlocal to OpenSSH).
      openApiChannel(client).then((ch) => {
        joinChannel(ch, sock);
      }, (err: Error) => {
        o.log.debug({ err: err.message, child: o.name }, "tunnel channel refused");
        sock.destroy(); // refused, or the SSH connection is already gone
      });
    } catch {
      sock.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(reachableSocketPath(path), () => { server.off("error", reject); resolve(); });
  });
  await chmod(path, 0o600);

  const close = async () => {
    if (closed) return;
    closed = true;
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    closeConnection();
    await rm(path, { force: true });
    for (const cb of closers.splice(0)) cb();
  };
  client.on("close", () => {
    o.log.info({ child: o.name }, "tunnel to child closed");
    void close();
  });
  return { target: `unix://${path}`, close, onClose: (cb) => { if (closed) cb(); else closers.push(cb); } };
}
