// The gRPC API server of one level: NestService, AccessService, grpc.health.v1
// and server reflection on a unix socket (mode 0600). Refuses to start over a
// live hsd and replaces a stale socket file.
// Imported by: src/daemon.

import * as grpc from "@grpc/grpc-js";
import { connect } from "node:net";
import { chmod, lstat, mkdir, unlink } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { DEFAULTS } from "../config/config.js";
import { DaemonRunningError, HsError, InvalidArgumentError } from "../domain/errors.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { AccessService, NestService } from "../gen/homestak/nest/v1/nest_pb.js";
import type { Logger } from "../log/logger.js";
import type { AccessApi, LevelApi } from "../domain/level-api.js";
import { toServiceDefinition, toServiceImpl } from "../rpc/service-definition.js";
import { withTimeout } from "../util/timeout.js";
import { reachableSocketPath } from "../util/unix-socket-path.js";
import { accessHandlers } from "./access-service.js";
import { HealthService } from "./health-service.js";
import { nestHandlers, type ManifestLoader, type NestLimits } from "./nest-service.js";
import { addReflection } from "./reflection.js";

export interface ApiServerOptions {
  socketPath: string;
  level: LevelApi;
  access: AccessApi;
  log: Logger;
  /** Request limits (config.nest); defaults when absent. */
  limits?: NestLimits;
  /** Level 0: loads and checks a manifest a Nest request names. */
  loadManifest?: ManifestLoader;
}

export interface ApiServer {
  readonly socketPath: string;
  /** Cancels running streams, waits up to graceMs for calls to end, then forces; removes the socket file. */
  /** Stops serving; running calls end with `reason` (default Cancelled: "hsd is shutting down"). */
  close(graceMs: number, reason?: HsError): Promise<void>;
}

const NEST_SERVICE = NestService.typeName;
/** A live hsd answers connect() at once; this only bounds a wedged peer. */
const PROBE_MS = 2_000;

/** "live", "stale" (a socket nobody accepts on) or "absent". */
async function probeSocket(path: string): Promise<"live" | "stale" | "absent"> {
  try {
    const st = await lstat(path);
    if (!st.isSocket()) {
      throw new InvalidArgumentError(`${path} exists and is not a socket; remove it or choose another api.socket`, { details: { path } });
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "absent";
    throw err;
  }
  return withTimeout(PROBE_MS, () => new DaemonRunningError(`another hsd is running at ${path} (it accepts but does not answer)`, { details: { path } }),
    () => new Promise<"live" | "stale" | "absent">((res, rej) => {
      const s = connect(reachableSocketPath(path));
      s.once("connect", () => { s.destroy(); res("live"); });
      s.once("error", (err: NodeJS.ErrnoException) => {
        if (err.code === "ECONNREFUSED") res("stale");
        else if (err.code === "ENOENT") res("absent");
        else rej(err);
      });
    }));
}

export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const socketPath = resolve(opts.socketPath);
  const log = opts.log.child({ subsystem: "api" });
  // Created 0700 so nobody but this user can even reach the socket during the chmod window.
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  const state = await probeSocket(socketPath);
  if (state === "live") throw new DaemonRunningError(`another hsd is running at ${socketPath}`, { details: { path: socketPath } });
  if (state === "stale") {
    log.warn({ socket: socketPath }, "replacing stale socket left by a dead hsd");
    await unlink(socketPath).catch((err: NodeJS.ErrnoException) => { if (err.code !== "ENOENT") throw err; });
  }

  const shutdown = new AbortController();
  const server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
  const limits: NestLimits = opts.limits ?? {
    maxDepth: DEFAULTS.maxDepth, maxWidth: DEFAULTS.maxWidth, provider: DEFAULTS.provider,
  };
  server.addService(toServiceDefinition(NestService, { log }),
    toServiceImpl(NestService, nestHandlers(opts.level, limits, opts.loadManifest), { log, shutdown: shutdown.signal }));
  server.addService(toServiceDefinition(AccessService, { log }),
    toServiceImpl(AccessService, accessHandlers(opts.access), { log, shutdown: shutdown.signal }));
  const health = new HealthService({ "": "NOT_SERVING", [NEST_SERVICE]: "NOT_SERVING" });
  health.addToServer(server, { log, shutdown: shutdown.signal });
  addReflection(server, [NestService, AccessService, Health], { log, shutdown: shutdown.signal });

  await new Promise<void>((res, rej) => {
    server.bindAsync(`unix://${reachableSocketPath(socketPath)}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (!err) return res();
      rej(/EADDRINUSE/.test(err.message)
        ? new DaemonRunningError(`another hsd is running at ${socketPath}`, { details: { path: socketPath }, cause: err })
        : new HsError(`cannot listen on ${socketPath}: ${err.message}`, { details: { path: socketPath }, cause: err }));
    });
  });
  await chmod(socketPath, 0o600);
  health.setStatus("", "SERVING");
  health.setStatus(NEST_SERVICE, "SERVING");
  log.info({ socket: socketPath }, "api listening");

  let closing: Promise<void> | undefined;
  return {
    socketPath,
    close(graceMs: number, reason?: HsError) {
      closing ??= (async () => {
        // Open Watches send NOT_SERVING and end with OK; the turn of the event
        // loop lets them write it before the abort below would cut them off.
        health.shutdown();
        await new Promise((res) => setImmediate(res));
        // Streams end with Cancelled (and their engines stop) before we wait for them.
        shutdown.abort(reason);
        await new Promise<void>((res) => {
          const timer = setTimeout(() => { log.warn("calls still running after grace period; forcing"); server.forceShutdown(); res(); }, graceMs);
          server.tryShutdown(() => { clearTimeout(timer); res(); });
        });
        await unlink(socketPath).catch(() => {});
        log.info("api closed");
      })();
      return closing;
    },
  };
}
