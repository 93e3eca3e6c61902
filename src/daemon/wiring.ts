// The only place real dependencies are built: config, logger, the LevelApi, the
// access store, the API server, readiness and graceful shutdown. Every other
// module gets its collaborators injected.
//
// The real level's parts are built in level-wiring.ts; the build* and startSsh
// options let tests substitute any of them.
// Imported by: src/daemon.

import type { HsError } from "../domain/errors.js";
import { resolve } from "node:path";
import { type HsdConfig } from "../config/config.js";
import { levelPaths, SYSTEM_PATHS } from "../config/level-layout.js";
import { loadConfig } from "../config/load-config.js";
import { PROVIDER_CONFIGS, providerOptions } from "../providers/registry.js";
import { lookupUser } from "../util/passwd.js";
import { withDemoSteps } from "../demo/demo-steps.js";
import { startApiServer, type ApiServer } from "../api/server.js";
import { createLogger, prettyDestination, teeDestination, type Logger } from "../log/logger.js";
import { LogRing } from "../log/log-ring.js";
import { destination as pinoDestination } from "pino";
import type { AccessApi, LevelApi } from "../domain/level-api.js";
import { buildLevel, prepareLevel, startLevelSsh, type LevelParts } from "./level-wiring.js";
import { announceReady, removeReadyFile, type ReadyInfo } from "./ready.js";
import { HSD_VERSION } from "./version.js";
import type { IdentityParts, SshHandle, WiringContext } from "./wiring-context.js";
import { serviceManagerFrom, type ServiceManager } from "../util/systemd-env.js";
import { sdNotifier } from "./sd-notify.js";
import { homestakLayout } from "../homestak/layout.js";
import { ManifestSource, manifestImages } from "../manifest/manifest-source.js";
import { manifestPlan } from "../manifest/manifest.js";
import { levelCheckpoints } from "./checkpoints.js";

export interface DaemonOptions {
  /** Level root; absent = system mode (/etc/homestak/hsd.yaml, /run/hsd/hsd.sock, /var/lib/hsd). */
  root?: string;
  /** Config file; default <root>/hsd.yaml, or /etc/homestak/hsd.yaml in system mode. */
  configFile?: string;
  env: NodeJS.ProcessEnv;
  /** What systemd asked of this process (hsd.ts takes it out of the env); default: read from env. */
  serviceManager?: ServiceManager;
  /** Overrides for tests and integration; defaults are the real thing. */
  buildLevel?: (ctx: WiringContext) => LevelApi;
  buildAccess?: (config: HsdConfig, log: Logger) => AccessApi | Promise<AccessApi>;
  startSsh?: (ctx: WiringContext) => Promise<SshHandle>;
  /** Log destination (tests); default stdout. */
  logDestination?: NodeJS.WritableStream;
}

export interface Daemon {
  readonly config: HsdConfig;
  readonly log: Logger;
  readonly ready: ReadyInfo;
  /** Graceful stop: cancel streams, close listeners, remove socket and ready.json. Idempotent. */
  stop(reason: string): Promise<void>;
  /** Settles when the daemon has stopped, whoever asked. */
  readonly stopped: Promise<void>;
}

export interface ResolvedPaths { root: string; configFile: string; socket?: string }

export function resolvePaths(o: Pick<DaemonOptions, "root" | "configFile">): ResolvedPaths {
  if (o.root !== undefined) {
    const root = resolve(o.root);
    return { root, configFile: resolve(o.configFile ?? levelPaths(root).config) };
  }
  return { root: SYSTEM_PATHS.stateRoot, configFile: resolve(o.configFile ?? SYSTEM_PATHS.config), socket: SYSTEM_PATHS.socket };
}

export async function startDaemon(o: DaemonOptions): Promise<Daemon> {
  const p = resolvePaths(o);
  // A bad config throws here, before anything listens or is written.
  // On an installed system the homestak trees live in the homestak user's home, as homestak's bootstrap lays them out.
  const homestakHome = o.root === undefined ? lookupUser("homestak")?.home : undefined;
  // ... and belong to that user: homestak.user defaults to it there (a --root level names one or has none).
  // A level under a user's root takes a free SSH port unless hsd.yaml names one: never the system hsd's 2222.
  const config = withDemoSteps(await loadConfig(p.configFile, {
    providers: PROVIDER_CONFIGS,
    root: p.root, ...(p.socket ? { socket: p.socket } : { freeSshPort: true }), ...(homestakHome ? { homestakHome, homestakUser: "homestak" } : {}),
  }));
  const destination = o.logDestination
    ? (o.logDestination as unknown as import("pino").DestinationStream)
    : o.env.HSD_LOG_PRETTY === "1" ? await prettyDestination() : pinoDestination({ dest: 1, sync: true });
  // Every line also goes to the ring `hsctl logs` reads, in JSON whatever stdout gets.
  const logRing = new LogRing();
  const log = createLogger({
    level: config.log.level,
    base: { pid: process.pid, lvl: config.level.name },
    destination: teeDestination(destination, logRing.stream() as unknown as import("pino").DestinationStream),
  });
  const paths = levelPaths(config.root);
  // Named points a test may hold or kill at (nothing listens outside tests).
  const checkpoints = levelCheckpoints(config.level.name, paths.stateDir);
  const manager = o.serviceManager ?? serviceManagerFrom(o.env, process.pid);
  const notifier = sdNotifier({ manager, pid: process.pid, log });
  log.info({ config: config.source, root: config.root, version: HSD_VERSION }, "hsd starting");

  let ssh: SshHandle | undefined;
  const identity = (): IdentityParts => ({
    publicKey: ssh?.publicKey ?? "",
    hostKeyFingerprint: ssh?.hostKeyFingerprint ?? "",
    hostKey: ssh?.hostKey ?? "",
    sshAddress: ssh ? `${config.ssh.advertiseHost}:${ssh.port}` : "",
  });

  let stopRequested: (reason: string) => void = () => {};
  // The real level unless a test overrides a part: keys, key store, repos,
  // secrets and journal are prepared before anything listens.
  let parts: LevelParts | undefined;
  let closeLevel: () => Promise<void> = async () => {};
  let beforeStopLevel: () => Promise<HsError | undefined> = async () => undefined;
  let startLevel = () => {};
  const access = await (o.buildAccess ?? (async (c: HsdConfig, l: Logger) => {
    parts = await prepareLevel(c, l, checkpoints);
    return parts.access;
  }))(config, log);
  const ctx: WiringContext = {
    config, log, version: HSD_VERSION, access, identity,
    requestShutdown: () => stopRequested("requested over the API"),
    logRing,
  };
  const level = (o.buildLevel ?? ((c: WiringContext) => {
    const built = buildLevel(c, parts ?? (() => { throw new Error("buildLevel needs the default buildAccess"); })(), o.env, manager, checkpoints, {
      systemInstall: o.root === undefined,
    });
    closeLevel = built.close;
    beforeStopLevel = built.beforeStop;
    startLevel = built.start;
    return built.level;
  }))(ctx);
  const startSsh = o.startSsh ?? (parts ? (c: WiringContext) => startLevelSsh(c, parts!) : undefined);

  let api: ApiServer | undefined;
  try {
    // Level 0 builds manifests from its own site-config checkout; levels below get plans from their parent.
    const layout = parts && config.parent === null ? homestakLayout(config, parts.repos) : undefined;
    // A demo site-config is generated after start: a manifest is read once its checkout exists.
    const siteConfigReady = layout?.configRepo ? parts?.repoPrepared[layout.configRepo] : undefined;
    const manifests = layout
      ? new ManifestSource({ siteConfigDir: layout.configDir, images: () => manifestImages(config), ready: () => siteConfigReady ?? Promise.resolve() })
      : undefined;
    api = await startApiServer({
      socketPath: config.api.socket, level, access, log, limits: {
        ...config.nest, providerOptions: (provider, requested) => providerOptions(config, provider, requested),
      },
      ...(manifests ? { loadManifest: async (req) => manifestPlan(await manifests.load(req)) } : {}),
    });
    // Readiness waits for the SSH endpoint: a parent dials it right after.
    if (startSsh) ssh = await startSsh(ctx);
  } catch (err) {
    await ssh?.close().catch(() => {});
    await api?.close(0).catch(() => {});
    throw err;
  }

  const ready: ReadyInfo = {
    pid: process.pid,
    socket: api.socketPath,
    sshHost: ssh ? config.ssh.advertiseHost : "",
    sshPort: ssh?.port ?? 0,
    hostKeyFingerprint: ssh?.hostKeyFingerprint ?? "",
    publicKey: ssh?.publicKey ?? "",
    version: HSD_VERSION,
  };
  // Before readiness (the parent is in its install phase): a test may hold here.
  await checkpoints.at("startup", (m) => log.warn(m), new AbortController().signal);
  const stopWatchdog = notifier.startWatchdog();
  await announceReady({ readyFile: paths.ready, info: ready, env: o.env, log, notifier });
  log.info({ socket: ready.socket, sshPort: ready.sshPort }, "hsd ready");
  parts?.startRepos();
  startLevel();

  let stopping: Promise<void> | undefined;
  let markStopped!: () => void;
  const stopped = new Promise<void>((r) => { markStopped = r; });
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason }, "hsd stopping");
      stopWatchdog();
      await notifier.stopping();
      // Ready first: a watcher must never see ready.json for a daemon that is going away.
      await removeReadyFile(paths.ready);
      // While the API is open: a configure step the machine's reboot interrupts is announced as that reboot.
      // ... and the calls still running end as the machine's going down (LevelWentDown) when it is, not as a cancel.
      const wentDown = await beforeStopLevel().catch((err) => { log.warn({ err }, "ending configure steps for the machine's reboot failed"); return undefined; });
      await api!.close(config.timeouts.shutdownMs, wentDown);
      await closeLevel().catch((err) => log.warn({ err }, "closing child links failed"));
      // Bounded: a peer that vanished (a child VM powered off) never acknowledges the close.
      const sshClosed = ssh?.close().catch((err) => log.warn({ err }, "ssh endpoint close failed"));
      await Promise.race([sshClosed, new Promise<void>((r) => setTimeout(r, config.timeouts.shutdownMs).unref())]);
      log.info("hsd stopped");
      markStopped();
    })();
    return stopping;
  };
  stopRequested = (reason) => { void stop(reason); };
  return { config, log, ready, stop, stopped };
}
