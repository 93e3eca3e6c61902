// Finds the local hsd's socket and opens typed clients to it. Resolution order:
// --socket PATH, --root DIR (its hsd.yaml's api.socket), HSD_SOCKET,
// $HSD_ROOT/run/hsd.sock (default ./.hsd) if it exists, else /run/hsd/hsd.sock.
// Imported by: src/cli.

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { DEFAULTS } from "../config/config.js";
import { levelPaths, SYSTEM_PATHS } from "../config/level-layout.js";
import { loadConfig } from "../config/load-config.js";
import { PROVIDER_CONFIGS } from "../providers/registry.js";
import { accessClient, nestClient, type AccessClient, type NestClient } from "../rpc/level-client.js";

export interface ConnectOptions {
  socket?: string;
  root?: string;
  env: NodeJS.ProcessEnv;
  cwd: string;
}

/** The level root hsctl uses when nothing else is said (a user's level 0). */
export const LOCAL_ROOT = ".hsd";

export async function resolveSocket(o: ConnectOptions): Promise<string> {
  if (o.socket) return resolve(o.cwd, o.socket);
  if (o.root) {
    const root = resolve(o.cwd, o.root);
    const cfg = await loadConfig(levelPaths(root).config, { root, providers: PROVIDER_CONFIGS });
    return cfg.api.socket;
  }
  if (o.env.HSD_SOCKET) return resolve(o.cwd, o.env.HSD_SOCKET);
  // The user level 0 that `hsctl nest` starts lives under $HSD_ROOT (default ./.hsd).
  const local = levelPaths(resolve(o.cwd, o.env.HSD_ROOT || LOCAL_ROOT)).socket;
  if (existsSync(local)) return local;
  return SYSTEM_PATHS.socket;
}

export interface Connection {
  readonly socket: string;
  readonly nest: NestClient;
  readonly access: AccessClient;
  /** Deadline for one unary call from hsctl: a connect-sized bound, never a phase budget. */
  readonly unaryDeadlineMs: number;
  close(): void;
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
