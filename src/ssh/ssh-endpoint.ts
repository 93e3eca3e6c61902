// The level's one SSH server (ssh2): public-key auth against the
// AuthorizedKeyStore; readers may run git-upload-pack on exported repos and
// hsd-image on configured image names (each with its own cap and queue),
// controllers may tunnel to the level's own gRPC socket; everything else is
// refused.
// Imported by: src/daemon, src/ssh.

import { connect as netConnect, createServer } from "node:net";
import { readFileSync } from "node:fs";
import ssh2, { type Connection, type ServerChannel, type AuthContext } from "ssh2";

// ssh2 is CommonJS; its named exports are not visible to ESM.
const { Server, utils } = ssh2;
import type { Logger } from "../log/logger.js";
import type { KeyRole } from "../domain/level-api.js";
import { HsError, RepoNotFoundError, InvalidArgumentError, ImageNotFoundError } from "../domain/errors.js";
import { finishChannel, type ImageServer, type UploadPackServer } from "./exec-channel.js";
import { UploadPackLimiter } from "./upload-pack-limiter.js";
import type { AuthorizedKeyStore } from "./authorized-key-store.js";
import { parseExecCommand } from "./exec-command.js";
import { joinChannel } from "./channel-stream.js";
import { privateKeyPublic } from "./key-fingerprint.js";
import { KEEPALIVE_COUNT_MAX } from "./parent-connection.js";
import { reachableSocketPath } from "../util/unix-socket-path.js";
import { ENDPOINT_CIPHERS } from "./ciphers.js";
import { coalesceWrites } from "./coalesce-writes.js";

/** Maps an allow-listed repo name to its absolute bare repo path, or undefined (may wait: level 0 exporting at start). */
export type RepoResolver = (name: string) => string | undefined | Promise<string | undefined>;

/** The only direct-tcpip target a controller may open; it always means the level's gRPC socket. */
export const GRPC_VIRTUAL_HOST = "hsd.grpc";
export const GRPC_VIRTUAL_PORT = 1;

export interface SshEndpointOptions {
  host: string;
  port: number;
  /** Private host key texts (OpenSSH or PEM); or hostKeyPath. */
  hostKeys?: (string | Buffer)[];
  hostKeyPath?: string;
  grpcSocketPath: string;
  keys: AuthorizedKeyStore;
  repos: RepoResolver;
  /** Serves a reader's git-upload-pack (src/git/upload-pack.ts gitUploadPack); injected so ssh never imports git. */
  uploadPack: UploadPackServer;
  maxUploadPacks: number;
  /** Serves hsd-image to readers; absent: every image request is ImageNotFound. */
  images?: ImageServer;
  /** Image transfers at once (default 2); the rest wait in their own queue, up to queueTimeoutMs. */
  maxImageTransfers?: number;
  queueTimeoutMs: number;
  uploadPackTimeoutS: number;
  authFailureDelayMs: number;
  /**
   * Keepalive toward connected peers (0 = off). A parent behind a cut link
   * is dropped after about interval x 4, which closes its tunnel channels and
   * so cancels the calls it was driving here: a child notices its parent is gone.
   */
  keepaliveIntervalMs?: number;
  log: Logger;
}

export interface SshEndpointStats {
  activeUploadPacks: number; queued: number; authFailures: number;
  activeImageTransfers: number; queuedImageTransfers: number;
}

export interface SshEndpoint {
  address(): { host: string; port: number };
  readonly hostKeyFingerprint: string;
  /** The host key's public half, "<type> <base64>" (a child's OpenSSH pins it). */
  readonly hostKey: string;
  close(): Promise<void>;
  stats(): SshEndpointStats;
}

/** Failed auth attempts one connection may make before it is dropped (OpenSSH's MaxAuthTries). */
export const MAX_AUTH_TRIES = 6;

const SHELL_REFUSED = "hsd: no shell here: readers may run git-upload-pack, controllers may open the hsd API tunnel\n";

export async function startSshEndpoint(opts: SshEndpointOptions): Promise<SshEndpoint> {
  const log = opts.log;
  const hostKeys = opts.hostKeys ?? (opts.hostKeyPath ? [readFileSync(opts.hostKeyPath)] : []);
  if (hostKeys.length === 0) throw new InvalidArgumentError("SSH endpoint needs a host key");
  const { fingerprint: hostKeyFingerprint, line: hostKey } = privateKeyPublic(hostKeys[0]!);
  const limiter = new UploadPackLimiter(opts.maxUploadPacks);
  // Images are few and large: their own, smaller cap, so a 3 GB transfer never holds a fetch's slot.
  const imageLimiter = new UploadPackLimiter(opts.maxImageTransfers ?? 2, "image transfer");
  const clients = new Set<Connection>();
  const timers = new Set<NodeJS.Timeout>();
  const shutdown = new AbortController();
  let authFailures = 0;

  const keepalive = opts.keepaliveIntervalMs && opts.keepaliveIntervalMs > 0
    ? { keepaliveInterval: opts.keepaliveIntervalMs, keepaliveCountMax: KEEPALIVE_COUNT_MAX } : {};
  const server = new Server({ hostKeys, ident: "hsd", algorithms: { cipher: [...ENDPOINT_CIPHERS] as ssh2.CipherAlgorithm[] }, ...keepalive }, (client, info) => {
    // ssh2 leaves Nagle on; small pkt-line round trips then cost ~40 ms each.
    (client as Connection & { setNoDelay(on: boolean): void }).setNoDelay(true);
    clients.add(client);
    const clog = log.child({ peer: `${info.ip}:${info.port}` });
    let role: KeyRole | undefined;
    let fingerprint: string | undefined;

    client.on("error", (err) => clog.debug({ err: err.message }, "ssh client error"));
    client.on("close", () => clients.delete(client));

    let triesLeft = MAX_AUTH_TRIES;
    client.on("authentication", (ctx: AuthContext) => {
      const fail = () => {
        authFailures++;
        if (--triesLeft <= 0) {
          // A brute-forcer pays a new handshake every few guesses, and cannot pin a connection.
          clog.info("too many authentication failures; disconnecting");
          client.end();
          return;
        }
        const t = setTimeout(() => {
          timers.delete(t);
          try { ctx.reject(["publickey"]); } catch { /* peer gone */ }
        }, opts.authFailureDelayMs);
        timers.add(t);
      };
      if (ctx.method === "none") return ctx.reject(["publickey"]);
      if (ctx.method !== "publickey") { clog.info({ method: ctx.method }, "auth method refused"); return fail(); }
      const found = opts.keys.lookup(ctx.key.algo, ctx.key.data);
      if (!found) { clog.info("unknown public key"); return fail(); }
      if (!ctx.signature) return ctx.accept(); // the "query" step: may I use this key?
      const pub = utils.parseKey(found.publicKey);
      if (pub instanceof Error || Array.isArray(pub)) return fail();
      const ok = ctx.blob !== undefined && pub.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true;
      if (!ok) { clog.info({ fingerprint: found.fingerprint }, "bad signature"); return fail(); }
      role = found.role;
      fingerprint = found.fingerprint;
      ctx.accept();
    });

    client.on("ready", () => {
      const alog = clog.child({ key: fingerprint, role });
      alog.debug("authenticated");

      client.on("session", (acceptSession) => {
        const session = acceptSession();
        // Pre-start requests: all refused. Env in particular: a client's
        // GIT_PROTOCOL must never reach upload-pack.
        session.on("env", (_a, reject) => reject?.());
        session.on("pty", (_a, reject) => reject?.());
        session.on("x11", (_a, reject) => reject?.());
        session.on("auth-agent", (_a, reject) => reject?.());
        session.on("signal", (_a, reject) => reject?.());
        session.on("shell", (accept) => refuse(accept(), SHELL_REFUSED, 1));
        session.on("subsystem", (accept, _r, info) => {
          alog.info({ subsystem: info.name }, "subsystem refused");
          refuse(accept(), `hsd: subsystem ${JSON.stringify(info.name.slice(0, 32))} is not available\n`, 1);
        });
        session.on("exec", (accept, _r, info) => {
          const channel = accept();
          if (role !== "reader") {
            alog.info("exec refused for controller");
            return refuse(channel, "hsd: a controller key may only open the hsd API tunnel, not run commands\n", 1);
          }
          void serveExec(channel, info.command, alog);
        });
      });

      client.on("tcpip", (accept, reject, info) => {
        if (role !== "controller" || info.destIP !== GRPC_VIRTUAL_HOST || info.destPort !== GRPC_VIRTUAL_PORT) {
          alog.info({ destPort: info.destPort }, "direct-tcpip refused");
          return reject();
        }
        tunnel(accept, reject, alog);
      });
      client.on("openssh.streamlocal", (accept, reject) => {
        // The requested socket path is ignored on purpose: a controller reaches
        // this level's API and nothing else on the host.
        if (role !== "controller") { alog.info("streamlocal refused"); return reject(); }
        tunnel(accept, reject, alog);
      });
      client.on("request", (_accept, reject, name) => {
        alog.info({ request: name }, "global request refused");
        reject?.();
      });
    });
  });

  function refuse(channel: ServerChannel | undefined, message: string, status: number): void {
    if (!channel) return;
    channel.on("error", () => {});
    channel.stderr.write(message);
    finishChannel(channel, status);
  }

  function tunnel(accept: () => ServerChannel, reject: () => void, alog: Logger): void {
    const sock = netConnect(reachableSocketPath(opts.grpcSocketPath));
    sock.once("error", (err) => { alog.warn({ err: err.message }, "API socket unreachable"); reject(); });
    sock.once("connect", () => {
      sock.removeAllListeners("error");
      joinChannel(accept(), sock);
    });
  }

  async function serveExec(channel: ServerChannel, command: string, alog: Logger): Promise<void> {
    channel.on("error", () => {});
    const gone = new AbortController();
    const onGone = () => gone.abort();
    channel.once("close", onGone);
    shutdown.signal.addEventListener("abort", onGone, { once: true });
    let release: (() => void) | undefined;
    try {
      const cmd = parseExecCommand(command);
      if (cmd.service === "hsd-image") {
        if (!opts.images) throw new ImageNotFoundError("no such image");
        const ilog = alog.child({ image: cmd.image });
        release = await imageLimiter.acquire(opts.queueTimeoutMs, gone.signal);
        ilog.debug({ offset: cmd.offset, active: imageLimiter.activeCount, queued: imageLimiter.queuedCount }, "image transfer started");
        const t0 = Date.now();
        const status = await opts.images.serve({ name: cmd.image, offset: cmd.offset, mode: cmd.mode, sha256: cmd.sha256, channel, log: ilog, signal: gone.signal });
        ilog.info({ status, ms: Date.now() - t0 }, "image transfer finished");
        return;
      }
      const repoPath = await opts.repos(cmd.repo);
      if (repoPath === undefined) throw new RepoNotFoundError("no such repo", { details: { repo: cmd.repo } });
      const rlog = alog.child({ repo: cmd.repo });
      if (limiter.activeCount >= opts.maxUploadPacks || limiter.queuedCount > 0) {
        rlog.debug({ active: limiter.activeCount, queued: limiter.queuedCount + 1 }, "upload-pack queued");
      }
      release = await limiter.acquire(opts.queueTimeoutMs, gone.signal);
      rlog.debug({ active: limiter.activeCount, queued: limiter.queuedCount }, "upload-pack started");
      const t0 = Date.now();
      const status = await opts.uploadPack.serve({
        repoPath, channel, timeoutS: opts.uploadPackTimeoutS, log: rlog, signal: gone.signal,
      });
      rlog.info({ status, ms: Date.now() - t0 }, "upload-pack finished");
    } catch (err) {
      const code = err instanceof HsError ? err.code : "Internal";
      const msg = err instanceof HsError ? err.message : "internal error";
      alog.info({ code }, "exec refused");
      if (code === "AccessDenied") return refuse(channel, `hsd: ${msg}\n`, 1);
      // An image reader is hsd itself: it reads the code back from the bracket (never a git client).
      if (command.startsWith("hsd-image ")) return refuse(channel, `hsd: ${msg} [${code}]\n`, 1);
      // Git shows an ERR pkt-line as "fatal: remote error: <msg>".
      if (!channel.destroyed) channel.write(opts.uploadPack.errorLine(msg));
      refuse(channel, `hsd: ${msg}\n`, 128);
    } finally {
      release?.();
      channel.removeListener("close", onGone);
      shutdown.signal.removeEventListener("abort", onGone);
    }
  }

  // The endpoint's own listener: each connection's socket sends a tick's packets as one
  // write (coalesce-writes.ts) before ssh2 takes it.
  const tcp = createServer((sock) => server.injectSocket(coalesceWrites(sock)));
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(opts.port, opts.host, () => { tcp.removeListener("error", reject); resolve(); });
  });
  for (const s of [tcp, server]) s.on("error", (err: Error) => log.error({ err: err.message }, "ssh server error"));
  const addr = tcp.address() as { address: string; port: number };
  log.info({ host: addr.address, port: addr.port, hostKeyFingerprint }, "ssh endpoint listening");

  return {
    hostKeyFingerprint,
    hostKey,
    address: () => ({ host: addr.address, port: addr.port }),
    stats: () => ({
      activeUploadPacks: limiter.activeCount, queued: limiter.queuedCount, authFailures,
      activeImageTransfers: imageLimiter.activeCount, queuedImageTransfers: imageLimiter.queuedCount,
    }),
    close: () => new Promise<void>((resolve) => {
      shutdown.abort();
      for (const t of timers) clearTimeout(t);
      timers.clear();
      tcp.close(() => resolve());
      for (const c of clients) c.end();
    }),
  };
}
