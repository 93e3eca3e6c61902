// Opens typed clients to the hsd hsctl talks to. --host URL (or HSD_HOST)
// reaches a remote level through its SSH endpoint; else the local socket
// resolve-socket.ts finds. Loaded by hsctl when a command first connects.
// Imported by: src/cli.

import { mkdtemp, rm } from "node:fs/promises";
import { homedir, tmpdir, userInfo } from "node:os";
import { join, resolve } from "node:path";
import { silentLogger } from "../log/logger.js";
import { openOperatorTunnel, parseSshUrl } from "../ssh/operator-connection.js";
import { DEFAULTS } from "../config/config.js";
import { accessClient, nestClient, type AccessClient, type NestClient } from "../rpc/level-client.js";
import { resolveSocket, type ConnectOptions } from "./resolve-socket.js";

export interface Connection {
  readonly socket: string;
  readonly nest: NestClient;
  readonly access: AccessClient;
  /** Deadline for one unary call from hsctl: a connect-sized bound, never a phase budget. */
  readonly unaryDeadlineMs: number;
  close(): void | Promise<void>;
}

/**
 * Deadline of one unary call through --host: a command timeout, larger than
 * the SSH connect timeout (DEFAULTS.connectMs) because the call may be
 * relayed down several levels, each with its own connect timeout.
 */
export const REMOTE_COMMAND_MS = 60_000;

export interface HostOptions {
  /** ssh://user@host[:port] */
  readonly host: string;
  /** -i FILE */
  readonly identity?: string;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  readonly signal?: AbortSignal;
}

/** A connection to a remote level's hsd through its SSH endpoint (hsctl --host). */
export async function connectHost(o: HostOptions): Promise<Connection> {
  const home = o.env.HOME || homedir();
  const target = parseSshUrl(o.host, o.env.USER || userInfo().username);
  const dir = await mkdtemp(join(tmpdir(), "hsctl-"));
  try {
    const tunnel = await openOperatorTunnel({
      target, knownHostsPath: join(home, ".ssh", "known_hosts"),
      ...(o.identity ? { identityFile: resolve(o.cwd, o.identity) } : { defaultIdentityFile: join(home, ".ssh", "id_ed25519") }),
      ...(o.env.SSH_AUTH_SOCK ? { agentSocket: o.env.SSH_AUTH_SOCK } : {}),
      connectTimeoutMs: DEFAULTS.connectMs, socketDir: dir, log: silentLogger(), ...(o.signal ? { signal: o.signal } : {}),
    });
    const own = { channelOptions: { "grpc.use_local_subchannel_pool": 1 } };
    const nest = nestClient(tunnel.target, own);
    const access = accessClient(tunnel.target, own);
    return {
      socket: o.host, nest, access, unaryDeadlineMs: REMOTE_COMMAND_MS,
      async close() { nest.close(); access.close(); await tunnel.close(); await rm(dir, { recursive: true, force: true }); },
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

export async function connect(o: ConnectOptions): Promise<Connection> {
  return connectSocket(await resolveSocket(o));
}

export function connectSocket(socket: string): Connection {
  // A private subchannel: a connection to a freshly started hsd must not inherit the
  // backoff of an earlier failed dial to the same (then stale) socket.
  const own = { channelOptions: { "grpc.use_local_subchannel_pool": 1 } };
  const nest = nestClient(socket, own);
  const access = accessClient(socket, own);
  return {
    socket, nest, access, unaryDeadlineMs: DEFAULTS.connectMs,
    close() { nest.close(); access.close(); },
  };
}
