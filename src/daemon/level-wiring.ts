// Builds the real level for startDaemon: the level's keys and SSH endpoint, the
// authorized-key store, the repo set (the demo set at a level 0 with no repos
// configured), the secrets file, the journal, the providers, the child links
// over SSH tunnels, and the Level itself.
// Imported by: src/daemon.

import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type HsdConfig } from "../config/config.js";
import { levelPaths } from "../config/level-layout.js";
import type { Logger } from "../log/logger.js";
import type { RepoState } from "../domain/events.js";
import type { ParentRefs } from "../domain/level-api.js";
import { AuthorizedKeyStore } from "../ssh/authorized-key-store.js";
import { loadOrCreateLevelKeys, type LevelKeys } from "../ssh/level-keys.js";
import { startSshEndpoint } from "../ssh/ssh-endpoint.js";
import { ImageDigests } from "../images/image-digest.js";
import { imageServer } from "../images/image-server.js";
import { imageChecks } from "../images/image-checks.js";
import { openGrpcTunnel } from "../ssh/grpc-tunnel.js";
import { exportPath, resolverFor } from "../git/export-repos.js";
import { DEMO_REPO_NAMES_BY_SIZE, demoRepoPaths, demoVmRootPassword } from "../demo/demo-repos.js";
import { placeDemoRepo, seedDemoExport } from "../demo/demo-packs.js";
import { SecretsStore } from "../secrets/secrets-store.js";
import { Journal } from "../nest/journal.js";
import { ChildLinks } from "../nest/child-link.js";
import { grpcChildLink } from "../rpc/grpc-child-link.js";
import { NestEngine } from "../nest/nest-engine.js";
import { PROVIDERS, providerCache } from "../providers/registry.js";
import type { ServiceManager } from "../util/systemd-env.js";
import { AddressInUseError, errorCode, type HsError } from "../domain/errors.js";
import { readLastSshPort, rememberSshPort } from "./last-ssh-port.js";
import { keepaliveIntervalMs } from "../ssh/parent-connection.js";
import { Level } from "../level/level.js";
import { homestakLayout } from "../homestak/layout.js";
import { SiteConfigFiles } from "../homestak/site-config.js";
import { ageIdentityFiles } from "../homestak/sops-decrypt.js";
import { StepRunner, stepBaseEnv } from "../homestak/step-runner.js";
import type { ConfigureLeaf } from "../nest/phase-hook.js";
import { treeOwner } from "../homestak/tree-owner.js";
import { gitRepoOps } from "../level/git-repo-ops.js";
import { findOpenSsh } from "../images/openssh-transfer.js";
import { startSyncWatch } from "../level/sync-watch.js";
import { NO_CHECKPOINTS, type Checkpoints } from "./checkpoints.js";
import { cleanStaleTemps } from "../util/atomic-write.js";
import { WorkPool } from "../util/work-pool.js";
import type { SshHandle, WiringContext } from "./wiring-context.js";
import { gitUploadPack } from "../git/upload-pack.js";
import { levelRebooter } from "./level-reboot.js";
import { localLevelGoingDown, systemdGoingDown } from "./going-down-probe.js";
import { GoingDown } from "../homestak/going-down.js";
import { runCommand } from "../util/command-runner.js";

export interface LevelParts {
  readonly keys: LevelKeys;
  readonly access: AuthorizedKeyStore;
  /** name -> operator checkout (level 0); the names are final, the checkouts exist once reposPrepared resolves. */
  readonly repos: Readonly<Record<string, string>>;
  /** Per repo: settles when its checkout exists (at once, or once its demo repo is generated; rejects if that failed). */
  readonly repoPrepared: Readonly<Record<string, Promise<void>>>;
  /**
   * Per demo repo placed from a prebuilt pack: settles with its export's state
   * once that export is written straight from the pack (before the checkout),
   * or undefined when it was not (seedDemoExport).
   */
  readonly repoSeeded: Readonly<Record<string, Promise<RepoState | undefined>>>;
  /** Starts what reposPrepared waits for; the daemon calls it once it is ready (it must not delay readiness). */
  readonly startRepos: () => void;
  readonly secrets: SecretsStore;
  readonly journal: Journal;
  /** Settles once level 0's first export after start is done (or failed); at once below level 0. */
  readonly exported: Promise<void>;
  readonly markExported: () => void;
  /** sha256s of this level's images, cached by size and mtime. */
  readonly digests: ImageDigests;
}

/** Everything that must exist before the API listens. */
export async function prepareLevel(config: HsdConfig, log: Logger, checkpoints: Checkpoints = NO_CHECKPOINTS): Promise<LevelParts> {
  const paths = levelPaths(config.root);
  // Temp files of atomic writes killed before their rename (state, secrets, keys): nothing writes yet.
  // Below level 0 that includes config/, where the level's homestak secrets are written (level 0's is the operator's: never touched).
  const configDir = config.parent ? [homestakLayout(config).configDir] : [];
  for (const dir of [config.root, paths.stateDir, paths.keysDir, paths.runDir, ...configDir]) {
    const removed = await cleanStaleTemps(dir);
    if (removed.length > 0) log.info({ dir, removed }, "removed temp files of interrupted writes");
  }
  // A local reboot's marker outlives it only if that reboot died half way; this start is after it either way.
  await rm(paths.goingDown, { force: true });
  const keys = await loadOrCreateLevelKeys(paths.keysDir, { name: config.level.name });
  const access = new AuthorizedKeyStore(paths.accessKeys, log.child({ sub: "access" }));
  await access.load();
  if (config.parent) access.addStaticKey({ publicKey: config.parent.publicKey, role: "controller", comment: "parent (from hsd.yaml)" });
  // Checkpoints between a state file's write and its rename (wired only when a test listens).
  const secrets = new SecretsStore(paths.secrets, { beforeRename: checkpoints.beforeRename("secrets-write") });
  let repos = config.repos;
  let startRepos = () => {};
  let repoPrepared: Record<string, Promise<void>> = {};
  const repoSeeded: Record<string, Promise<RepoState | undefined>> = {};
  if (!config.parent && Object.keys(repos).length === 0) {
    // Placed once the daemon serves (from the build's prebuilt packs, else
    // generated: ~0.5 s, partly on this thread): nothing reads a checkout
    // before a refresh, and the refresh of each repo waits for its own, so a
    // nest builds its first child meanwhile.
    const dir = join(config.root, "demo");
    repos = demoRepoPaths(dir);
    const missing = Object.keys(repos).filter((n) => !existsSync(repos[n]!));
    let vmRootPassword: string | undefined;
    if (missing.includes("site-config")) {
      // Its gitignored site.yaml and secrets.yaml (homestak's schema, demo
      // values) are written with it: they are level 0's, the operator's files.
      vmRootPassword = demoVmRootPassword();
    }
    // Two at a time, largest first: iac-driver's generate + refresh is the
    // chain a first nest waits on, and six git processes at once on two cores
    // made it ~2x longer without finishing anything sooner. A free slot takes
    // the next repo: iac-driver takes about as long as the other five
    // together, so fixed lanes (i % 2) left one idle while site-config and
    // tofu waited behind it (~90 ms later exports on a cold nest).
    //
    // Each export is written first, straight from the build's pack (no
    // spawn): a nest's first child syncs from it while the checkouts, which
    // nothing on its path waits for then, are placed behind it at a lower CPU
    // priority (their ~30 git processes competed with l1's install).
    const started = new Promise<void>((res) => { startRepos = res; });
    const pool = new WorkPool(2);
    repoPrepared = Object.fromEntries(DEMO_REPO_NAMES_BY_SIZE.filter((n) => missing.includes(n)).map((name) => {
      const seeded = started.then(() => seedDemoExport(name, { checkout: repos[name]!, exportsDir: paths.reposDir, secretPatterns: config.secretPatterns }))
        .catch((err: unknown) => { log.warn({ err, repo: name }, "demo export not written from its pack; a refresh writes it"); return undefined; });
      repoSeeded[name] = seeded;
      const p = seeded.then((seed) => pool.run(async () => {
        await checkpoints.pass(`demo-place-${name}`);
        await generateDemoRepoInPlace(dir, name, vmRootPassword, log, seed ? paths.reposDir : undefined);
      }));
      p.catch((err: unknown) => log.error({ err, repo: name }, "generating a demo repo failed"));
      return [name, p];
    }));
  }
  await secrets.ensureGenerated({ keyPath: keys.userKeyPath });
  const journal = new Journal(paths.journal, { beforeRename: checkpoints.beforeRename("journal-write") });
  await journal.load();
  let markExported = () => {};
  const exported = config.parent ? Promise.resolve() : new Promise<void>((res) => { markExported = res; });
  const digests = new ImageDigests(paths.imageDigests, log.child({ sub: "images" }));
  return { keys, access, repos, repoPrepared, repoSeeded, startRepos, secrets, journal, exported, markExported, digests };
}

/**
 * A level 0 with no repos exports the generated demo set (its site-config's
 * gitignored secrets.yaml holds the demo secret this level was seeded with).
 * Each repo is generated in a directory of this process's own and renamed
 * into place, so a daemon killed half way leaves no half repo a restart would
 * take as whole; a git the kill orphaned may still be writing into the old
 * one, which is removed with retries and otherwise left alone.
 */
async function generateDemoRepoInPlace(dir: string, name: string, vmRootPassword: string | undefined, log: Logger, seededIn?: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const prefix = `.${name}.partial-`;
  for (const stale of (await readdir(dir)).filter((n) => n.startsWith(prefix))) {
    await rm(join(dir, stale), { recursive: true, force: true, maxRetries: 5 })
      .catch((err: unknown) => log.warn({ err, dir: stale }, "could not remove a half-generated demo repo"));
  }
  const partial = join(dir, `${prefix}${process.pid}`);
  // Behind a seeded export nothing waits for the checkout: it yields the CPU.
  const how = await placeDemoRepo(partial, name, { ...(vmRootPassword ? { vmRootPassword } : {}), ...(seededIn ? { niceness: 10 } : {}) });
  // The pack did not check out, so its seeded export is not served on: the next refresh writes it from the generated checkout.
  if (seededIn && how === "generated") await rm(exportPath(seededIn, name), { recursive: true, force: true });
  await rename(partial, join(dir, name));
  log.info({ repo: name, dir, from: how, ...(seededIn && how === "prebuilt" ? { export: "from the pack" } : {}) }, "no repos configured: generated a demo repo");
}

export async function startLevelSsh(ctx: WiringContext, parts: LevelParts): Promise<SshHandle> {
  const { config, log } = ctx;
  const paths = levelPaths(config.root);
  const names = config.parent ? config.repoNames : Object.keys(parts.repos);
  const resolve = resolverFor(paths.reposDir, names);
  // A clone that arrives while level 0 writes its first export waits for it
  // (bounded like a queued fetch) instead of hearing "no such repo" or
  // getting a bare repo that has no refs yet.
  const repos = async (name: string) => {
    if (!names.includes(name)) return undefined;
    await waitUpTo(config.ssh.queueTimeoutMs, parts.exported);
    return resolve(name);
  };
  const listen = (port: number) => startSshEndpoint({
    host: config.ssh.host, port, hostKeyPath: parts.keys.hostKeyPath, grpcSocketPath: config.api.socket,
    keys: parts.access, uploadPack: gitUploadPack, repos,
    images: imageServer({ entries: config.images.entries, digests: parts.digests }), maxImageTransfers: config.images.maxTransfers,
    maxUploadPacks: config.ssh.maxUploadPacks, queueTimeoutMs: config.ssh.queueTimeoutMs,
    uploadPackTimeoutS: config.ssh.uploadPackTimeoutS, authFailureDelayMs: config.ssh.authFailureDelayMs,
    keepaliveIntervalMs: keepaliveIntervalMs(config.timeouts.connectMs),
    log: log.child({ sub: "ssh" }),
  });
  const inUse = (err: NodeJS.ErrnoException, port: number) => {
    if (err.code !== "EADDRINUSE") return err;
    return new AddressInUseError(`the SSH endpoint cannot listen on ${config.ssh.host}:${port}: address in use`, {
      details: { host: config.ssh.host, port }, cause: err,
    });
  };
  const last = config.ssh.reuseLastPort ? await readLastSshPort(paths.sshPort) : undefined;
  const ep = await listen(last ?? config.ssh.port).catch(async (err: NodeJS.ErrnoException) => {
    if (last === undefined || err.code !== "EADDRINUSE") throw inUse(err, last ?? config.ssh.port);
    log.warn({ port: last }, "the SSH port this level had is taken now; listening on a free one (live children still pinned to the old port cannot sync until rebuilt)");
    return listen(0).catch((e: NodeJS.ErrnoException) => { throw inUse(e, 0); });
  });
  if (config.ssh.reuseLastPort && ep.address().port !== last) await rememberSshPort(paths.sshPort, ep.address().port);
  return {
    host: ep.address().host, port: ep.address().port, hostKeyFingerprint: ep.hostKeyFingerprint, hostKey: ep.hostKey, publicKey: parts.keys.publicKey,
    close: () => ep.close(),
  };
}

/** How long "is the machine going down?" may take: a share of the shutdown grace, and systemctl's usual answer is far below it. */
function goingDownProbeMs(shutdownMs: number): number {
  return Math.min(3_000, Math.max(500, shutdownMs / 4));
}

/** Resolves when `p` settles or after `ms`, whichever is first; never rejects. */
function waitUpTo(ms: number, p: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p.catch(() => undefined), new Promise<void>((r) => { timer = setTimeout(r, ms); })]).finally(() => clearTimeout(timer));
}

export interface BuiltLevel {
  level: Level;
  /** Called once the daemon is ready: level 0 writes its exports (readers may clone at once). */
  start(): void;
  /**
   * hsd is stopping, the API still open: a configure step the machine's reboot
   * interrupts ends as a reboot; resolves with what the calls still running end
   * with when the machine is going down (LevelWentDown), else undefined.
   */
  beforeStop(): Promise<HsError | undefined>;
  close(): Promise<void>;
}

export function buildLevel(
  ctx: WiringContext, parts: LevelParts, env: NodeJS.ProcessEnv, manager: ServiceManager, checkpoints: Checkpoints = NO_CHECKPOINTS,
  mode: { systemInstall: boolean } = { systemInstall: false },
): BuiltLevel {
  const { config, log } = ctx;
  const paths = levelPaths(config.root);
  const hsdEntry = fileURLToPath(new URL("./hsd.js", import.meta.url));
  const levelPath = env.HSD_LEVEL_PATH ? env.HSD_LEVEL_PATH.split("/") : [config.level.name];
  const links = new ChildLinks(async (name, endpoint, signal) => {
    const tunnel = await openGrpcTunnel({
      endpoint, userKeyPath: parts.keys.userKeyPath, socketDir: paths.runDir, name, connectTimeoutMs: config.timeouts.connectMs,
      log: log.child({ sub: "tunnel" }), signal,
    });
    const link = grpcChildLink({ target: tunnel.target, commandMs: config.timeouts.commandMs, closeTunnel: () => tunnel.close() });
    // A dead tunnel must not be reused: the next call reconnects.
    tunnel.onClose(() => { void links.drop(name); });
    return link;
  });
  const providerFor = providerCache({
    config, secrets: parts.secrets, publicKey: parts.keys.publicKey, userKeyPath: parts.keys.userKeyPath, stateDir: paths.stateDir,
    hsdCommand: [process.execPath, hsdEntry], levelPath, isRoot: process.getuid?.() === 0, digests: parts.digests, log,
    // As a system unit, children go in scopes of their own: the service's stop must not reach them.
    // (Not as a user's unit: PID 1 would refuse a non-root systemd-run --scope.)
    childScopes: !!manager.invocationId && manager.booted && process.getuid?.() === 0,
  });
  const layout = homestakLayout(config, parts.repos);
  const owner = treeOwner(config.homestak.user);
  const siteConfig = new SiteConfigFiles({
    layout, ...(owner ? { owner } : {}), self: () => ({ name: config.level.name, publicKey: parts.keys.publicKey }), ageIdentityFiles: ageIdentityFiles(env),
    beforeRename: checkpoints.beforeRename("secrets-write"),
  });
  const configPlaced = async (): Promise<void> => { if (layout.configRepo) await parts.repoPrepared[layout.configRepo]; };
  const configureLevel = PROVIDERS[config.nest.provider].configureLevel?.({ config, secrets: parts.secrets, stateDir: paths.stateDir, digests: parts.digests, homestakFiles: siteConfig });
  const systemInstall = PROVIDERS[config.nest.provider].systemInstall?.(config);
  // A level below 0 may reboot its machine when a configure step asks (a PVE install's new kernel).
  const reboot = config.parent ? levelRebooter({
    root: mode.systemInstall ? undefined : config.root, hsdCommand: [process.execPath, hsdEntry], commands: runCommand,
    graceMs: config.timeouts.shutdownMs + 1000, log: log.child({ sub: "reboot" }),
  }) : undefined;
  // ... or a step may just reboot it (homestak's pve-config runs `systemctl reboot`): asked of the same machine.
  const shutdownMs = config.timeouts.shutdownMs;
  const goingDown = reboot ? new GoingDown(
    mode.systemInstall ? systemdGoingDown(runCommand, goingDownProbeMs(shutdownMs)) : localLevelGoingDown(config.root),
    goingDownProbeMs(shutdownMs), log.child({ sub: "reboot" }),
  ) : undefined;
  const steps = new StepRunner({
    config, layout, journal: parts.journal, log: log.child({ sub: "steps" }), levelPath, now: () => Date.now(),
    baseEnv: stepBaseEnv(env), killGraceMs: shutdownMs,
    ...(reboot ? { rebootRequestPath: paths.rebootRequest } : {}),
    ...(goingDown ? { goingDown } : {}),
    // This level's reboot stops its children (a local level's processes, a PVE level's nested VMs): not while it has any.
    rebootBlocked: () => {
      const below = parts.journal.children().filter((c) => c.state !== "destroyed").map((c) => c.name);
      return below.length > 0 ? `it would stop the level${below.length > 1 ? "s" : ""} below it (${below.join(", ")})` : undefined;
    },
  });
  // A leaf (manifest type vm) has no hsd: this level runs its own steps, from its own trees, against it.
  // Its step records are the leaf's record's here; a step may ask for the leaf's reboot (src/nest/leaf-reboot.ts).
  const configureLeaf: ConfigureLeaf = (leaf, emit, signal, run) => new StepRunner({
    config: { ...config, level: { name: leaf.name, depth: config.level.depth + 1, spec: leaf.spec, manifest: leaf.manifest } },
    layout, journal: run.journal, log: log.child({ sub: "steps", leaf: leaf.name }), levelPath: [...levelPath, leaf.name],
    now: () => Date.now(), baseEnv: stepBaseEnv(env), killGraceMs: config.timeouts.shutdownMs,
    rebootRequestPath: paths.leafRebootRequest(leaf.name),
    extraEnv: {
      HSD_LEAF: "1", HSD_TARGET: leaf.address,
      HSD_PARENT_ADDRESS: `${config.ssh.advertiseHost}:${ctx.identity().sshAddress.split(":").pop() ?? ""}`,
      // The local provider's leaf is a directory (no machine): the steps are told where it is.
      ...(typeof leaf.handle.data.dir === "string" ? { HSD_TARGET_ROOT: leaf.handle.data.dir } : {}),
    },
  }).run({ fresh: run.fresh }, (ev) => emit({ kind: ev.kind, message: ev.message }), signal);
  const engine = new NestEngine({
    config, journal: parts.journal, configureLeaf, links, access: parts.access, log: log.child({ sub: "nest" }), clock: { now: () => Date.now() },
    providers: providerFor,
    // What this level passes down is homestak's own: config/secrets.yaml and config/site.yaml.
    // Level 0's config checkout (site-config) may still be being placed behind its
    // export (a demo set: the exports come from the packs first): read once it is there.
    readSecrets: async () => { await configPlaced(); return siteConfig.readSecrets(); },
    readSite: async () => { await configPlaced(); return siteConfig.readSite(); },
    levelChecks: () => imageChecks(config.images, parts.digests),
    knownImages: async () => {
      const known = await Promise.all(Object.entries(config.images.entries).map(async ([name, e]) => [name, await parts.digests.known(e.path)] as const));
      return Object.fromEntries(known.filter((k): k is readonly [string, NonNullable<typeof k[1]>] => k[1] !== undefined));
    },
    // Level 0 refreshes its exports while its children boot (the level owns that refresh).
    exportsReady: (): Promise<void> => level.exportsReady(),
    exportRefs: (): Promise<ParentRefs | undefined> => level.exportRefs(),
    self: () => {
      const id = ctx.identity();
      return {
        name: config.level.name, depth: config.level.depth, publicKey: parts.keys.publicKey, hostKeyFingerprint: id.hostKeyFingerprint, hostKey: id.hostKey,
        sshPort: Number(id.sshAddress.split(":").pop() ?? 0), sshAdvertiseHost: config.ssh.advertiseHost,
      };
    },
  });
  const level = new Level({
    config, log, version: ctx.version, clock: { now: () => Date.now() }, engine, journal: parts.journal, links,
    secrets: parts.secrets, identity: ctx.identity, requestShutdown: ctx.requestShutdown, siteConfig, steps,
    repos: gitRepoOps({
      config, repos: parts.repos, prepared: parts.repoPrepared, seeded: parts.repoSeeded, userKeyPath: parts.keys.userKeyPath, digests: parts.digests, log: log.child({ sub: "git", phase: "sync" }),
      sshPath: findOpenSsh(),
      ...(owner && config.parent ? { owner } : {}),
    }),
    ...(checkpoints.active ? { checkpoint: checkpoints.at } : {}),
    ...(ctx.logRing ? { logLines: ctx.logRing } : {}),
    // A level that is itself a node of its provider (a PVE node) sets itself up as one.
    ...(configureLevel ? { configureHook: configureLevel } : {}),
    ...(reboot ? { reboot } : {}),
    ...(goingDown ? { goingDown } : {}),
    ...(systemInstall ? { systemInstall } : {}),
  });
  // Watch mode is level 0's alone: below it, a level syncs when its parent tells it to.
  // Checkouts can only be watched once they exist (the demo set may still be generating).
  const watcher = !config.parent && config.sync.mode === "watch"
    ? Promise.all(Object.values(parts.repoPrepared)).then(() => startSyncWatch({
      checkouts: parts.repos, debounceMs: config.sync.debounceMs, log, sync: (sink, signal) => level.sync({ recursive: true }, sink, signal),
    }), () => undefined)
    : undefined;
  const stopExport = new AbortController();
  const start = () => {
    // Back from a reboot a configure step asked for: that configure goes on (its parent attaches when it reconnects).
    level.resumeAfterReboot();
    if (config.parent) return;
    // Level 0's images are hashed now, in the background (cached by size and mtime): a nest's
    // checks and its first template then find their digests known instead of hashing then.
    for (const e of Object.values(config.images.entries)) {
      parts.digests.digest(e.path).catch((err: unknown) => log.debug({ path: e.path, code: errorCode(err) }, "image not hashed at start; the nest's checks say why"));
    }
    level.exportAtStart(stopExport.signal)
      .catch((err: unknown) => { if (!stopExport.signal.aborted) log.warn({ err }, "exporting the repos at start failed; a sync or nest retries"); })
      .finally(parts.markExported);
  };
  return {
    level, start,
    // A quarter of the shutdown grace for the step to die with the machine: the whole stop must fit in the grace.
    beforeStop: () => level.stopForShutdown(shutdownMs / 4),
    close: async () => { stopExport.abort(); level.close(); steps.killAll(); await (await watcher)?.close(); await links.closeAll(); },
  };
}
