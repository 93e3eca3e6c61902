// Moves an image's bytes with the OpenSSH client when one is installed: ssh's
// stdout IS the .partial file (opened for append at the resume offset), so the
// bytes never pass through the daemon's JavaScript. The parent's host key is
// pinned to what the level's ssh2 connection verified; no user config, agent or
// trust-on-first-use.
// Imported by: src/daemon, src/images, src/level.

import { spawn } from "node:child_process";
import { constants, accessSync } from "node:fs";
import { open, rm, writeFile } from "node:fs/promises";
import { delimiter, join } from "node:path";
import type { Logger } from "../log/logger.js";
import {
  AccessDeniedError, CancelledError, CommandTimeoutError, ConnectTimeoutError, HostKeyMismatchError, type HsError, PeerGoneError,
} from "../domain/errors.js";
import { imageRawCommand } from "../ssh/exec-command.js";
import { keepaliveIntervalMs, KEEPALIVE_COUNT_MAX, type ParentConnection, type ParentEndpoint } from "../ssh/parent-connection.js";
import { remoteRefusal } from "./image-refusal.js";

/** How to reach the parent with OpenSSH, next to the level's ssh2 connection. */
export interface OpenSshRoute {
  /** The ssh binary (findOpenSsh). */
  readonly sshPath: string;
  readonly host: string;
  readonly port: number;
  /** The level's own private key file. */
  readonly userKeyPath: string;
  readonly connectTimeoutMs: number;
  /**
   * The parent's host key ("<type> <base64>") as the level's ssh2 connection
   * verified it against the pinned fingerprint (connecting first); undefined
   * when it cannot say, and the transfer stays on ssh2.
   */
  readonly hostKey: (signal?: AbortSignal) => Promise<string | undefined>;
  /**
   * The parent's host key from config (parent.host_key, whose fingerprint the
   * config loader checked against the pinned one): ssh pins it without waiting
   * for the ssh2 connection. Undefined when config does not say.
   */
  readonly pinnedHostKey?: string;
}

/** The `ssh` on PATH, or undefined (the transfer then stays on ssh2). */
export function findOpenSsh(path = process.env.PATH ?? ""): string | undefined {
  return findExecutable("ssh", path);
}

function findExecutable(name: string, path: string): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
  }
  return undefined;
}

/**
 * ssh's command line, under util-linux setpriv when there is one: ssh then
 * gets SIGTERM if this daemon dies, so no orphan keeps appending to a partial
 * that the next run resumes from.
 */
export function sshCommand(sshPath: string, args: readonly string[], path = process.env.PATH ?? ""): { file: string; args: string[] } {
  const setpriv = findExecutable("setpriv", path);
  return setpriv ? { file: setpriv, args: ["--pdeathsig", "TERM", "--", sshPath, ...args] } : { file: sshPath, args: [...args] };
}

/** The route beside a level's ParentConnection; undefined without an ssh binary or a key file (then ssh2 moves the bytes). */
export function parentOpenSshRoute(o: {
  sshPath: string | undefined; conn: ParentConnection; parent: ParentEndpoint & { readonly hostKey?: string };
  userKeyPath: string | undefined; connectTimeoutMs: number;
}): OpenSshRoute | undefined {
  if (!o.sshPath || !o.userKeyPath) return undefined;
  return {
    sshPath: o.sshPath, host: o.parent.host, port: o.parent.port, userKeyPath: o.userKeyPath, connectTimeoutMs: o.connectTimeoutMs,
    hostKey: async (signal) => { await o.conn.connect(signal); return o.conn.hostKeyLine(); },
    ...(o.parent.hostKey ? { pinnedHostKey: o.parent.hostKey } : {}),
  };
}

export interface OpenSshReceiveOptions {
  readonly route: OpenSshRoute;
  /** The pinned key line (what route.hostKey() answered). */
  readonly hostKey: string;
  readonly name: string;
  /** Bytes already in the partial: the first byte asked for. */
  readonly offset: number;
  readonly sha256: string;
  readonly partial: string;
  readonly commandTimeoutMs: number;
  readonly signal?: AbortSignal;
  readonly log: Logger;
  /** Called with the partial's size as it grows (every pollMs), and once at the end. */
  readonly onGrowth: (size: number) => void;
  readonly pollMs: number;
}

const ALIAS = "hsd-parent";
const STDERR_LIMIT = 4096;
const SYNC_EVERY = 64 << 20;
const CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com";

/** The ssh command line: nothing from ~/.ssh or /etc/ssh applies, the key is the level's, the host key the pinned one. */
export function openSshArgs(route: OpenSshRoute, knownHosts: string, command: string): string[] {
  const sec = (ms: number) => String(Math.max(1, Math.ceil(ms / 1000)));
  return [
    "-F", "/dev/null", "-T", "-x", "-a", "-e", "none", "-p", String(route.port), "-i", route.userKeyPath, "-l", "hsd",
    "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes", "-o", `UserKnownHostsFile=${knownHosts}`, "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", `HostKeyAlias=${ALIAS}`, "-o", "CheckHostIP=no", "-o", "UpdateHostKeys=no",
    "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
    // AES-GCM first: AES-NI on both ends, and hsd's ssh2 side does GCM in OpenSSL (chacha20 costs it more CPU per byte).
    "-o", `Ciphers=${CIPHERS}`,
    "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=ERROR",
    "-o", `ConnectTimeout=${sec(route.connectTimeoutMs)}`,
    "-o", `ServerAliveInterval=${sec(keepaliveIntervalMs(route.connectTimeoutMs))}`, "-o", `ServerAliveCountMax=${KEEPALIVE_COUNT_MAX}`,
    "--", route.host, command,
  ];
}

/**
 * Appends the image's bytes from `offset` to `partial` with ssh; resolves when
 * ssh exited 0. Ends with CommandTimeout past the budget, Cancelled on the
 * signal (ssh killed, the partial kept for a resume), or the typed error ssh's
 * exit and stderr stand for.
 */
export async function receiveWithOpenSsh(o: OpenSshReceiveOptions): Promise<void> {
  // Beside the partial, not in a temp dir: a daemon killed mid-transfer leaves
  // it with the partial (the next run rewrites it), never a stray dir in /tmp.
  const knownHosts = `${o.partial}.known_hosts`;
  const fh = await open(o.partial, "a", 0o600);
  try {
    await writeFile(knownHosts, `${ALIAS} ${o.hostKey}\n`, { mode: 0o600 });
    const cmd = sshCommand(o.route.sshPath, openSshArgs(o.route, knownHosts, imageRawCommand(o.name, o.offset, o.sha256)));
    const child = spawn(cmd.file, cmd.args, {
      stdio: ["ignore", fh.fd, "pipe"], env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C" },
      // Its own process group: a stop ends ssh and anything it started, never this daemon's group.
      detached: true,
    });
    let stderr = "";
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (d: string) => { stderr = (stderr + d).slice(-STDERR_LIMIT); });
    let ended: HsError | undefined;
    const stop = (err: HsError) => {
      if (ended) return;
      ended = err;
      try { if (child.pid) process.kill(-child.pid, "SIGTERM"); } catch { child.kill("SIGTERM"); }
    };
    const timer = setTimeout(() => stop(new CommandTimeoutError(`image ${o.name} exceeded ${o.commandTimeoutMs} ms`, {
      details: { image: o.name, timeoutMs: o.commandTimeoutMs },
    })), o.commandTimeoutMs);
    const onAbort = () => stop(new CancelledError(`image ${o.name} cancelled`, { details: { image: o.name } }));
    if (o.signal?.aborted) onAbort();
    o.signal?.addEventListener("abort", onAbort, { once: true });
    // Writeback runs alongside the transfer (a datasync per SYNC_EVERY grown), so the final fsync
    // flushes only the tail instead of the whole image at once.
    let syncing: Promise<void> | undefined;
    let syncedTo = o.offset;
    const poll = setInterval(() => {
      fh.stat().then((s) => {
        o.onGrowth(s.size);
        if (!syncing && s.size - syncedTo >= SYNC_EVERY) {
          syncedTo = s.size;
          syncing = fh.datasync().catch(() => undefined).finally(() => { syncing = undefined; });
        }
      }, () => undefined);
    }, o.pollMs);
    const exit = await new Promise<{ code: number | null; spawnError?: Error }>((resolve) => {
      child.once("error", (err) => resolve({ code: null, spawnError: err }));
      child.once("close", (code) => resolve({ code }));
    });
    clearTimeout(timer);
    clearInterval(poll);
    o.signal?.removeEventListener("abort", onAbort);
    // What arrived is on disk (resumable) before the outcome is judged.
    await syncing;
    await fh.sync();
    o.onGrowth((await fh.stat()).size);
    if (ended) throw ended;
    if (exit.code === 0) return;
    o.log.debug({ image: o.name, exitCode: exit.code, stderr: stderr.slice(-400) }, "ssh image transfer failed");
    throw sshFailure(o.route, o.name, exit.code, stderr, exit.spawnError);
  } finally {
    await fh.close();
    await rm(knownHosts, { force: true });
  }
}

/** ssh's own failures exit 255 (what its stderr says picks the type); any other status is the parent's. */
function sshFailure(route: OpenSshRoute, name: string, code: number | null, stderr: string, spawnError?: Error): HsError {
  const details = { image: name, host: route.host, port: route.port };
  if (spawnError) return new PeerGoneError(`cannot run ssh for image ${name}`, { details, cause: spawnError });
  if (code !== null && code !== 255) return remoteRefusal(stderr, code, name);
  if (/Host key verification failed|HOST IDENTIFICATION HAS CHANGED|No .* host key is known/i.test(stderr)) {
    return new HostKeyMismatchError(`host key of ${route.host}:${route.port} is not the pinned one`, { details });
  }
  if (/Permission denied/i.test(stderr)) return new AccessDeniedError("the parent refused this level's key", { details });
  if (/timed out/i.test(stderr) && !/Timeout, server .* not responding/i.test(stderr)) {
    return new ConnectTimeoutError(`no SSH session with ${route.host}:${route.port} within ${route.connectTimeoutMs} ms`, { details });
  }
  return new PeerGoneError(`the parent went away during image ${name}`, { details });
}
