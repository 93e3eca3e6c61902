// Which local socket hsctl talks to: --socket PATH, --root DIR (its hsd.yaml's
// api.socket), HSD_SOCKET, $HSD_ROOT/run/hsd.sock (default ./.hsd) if it
// exists, else /run/hsd/hsd.sock. Kept apart from connect.ts so that finding
// it loads no gRPC or SSH code (hsctl nest starts a level 0 before it needs them).
// Imported by: src/cli.

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { levelPaths, SYSTEM_PATHS } from "../config/level-layout.js";

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
    // The config loader (and every provider's config section) only when a root is named.
    const [{ loadConfig }, { PROVIDER_CONFIGS }] = await Promise.all([import("../config/load-config.js"), import("../providers/registry.js")]);
    const cfg = await loadConfig(levelPaths(root).config, { root, providers: PROVIDER_CONFIGS });
    return cfg.api.socket;
  }
  if (o.env.HSD_SOCKET) return resolve(o.cwd, o.env.HSD_SOCKET);
  // The user level 0 that `hsctl nest` starts lives under $HSD_ROOT (default ./.hsd).
  const local = levelPaths(resolve(o.cwd, o.env.HSD_ROOT || LOCAL_ROOT)).socket;
  if (existsSync(local)) return local;
  return SYSTEM_PATHS.socket;
}
