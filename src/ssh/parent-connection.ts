// One SSH connection from a level to its parent's endpoint, reused for every
// repo of a sync (and by a parent's gRPC tunnel to a child): user-key auth,
// host key pinned by SHA256 fingerprint, a connect timeout that is never the
// command timeout, keepalives derived from it so a dead link is noticed within
// about that timeout.
// Imported by: src/daemon, src/git, src/images, src/level, src/ssh.

import { readFile } from "node:fs/promises";
import { connect as netConnect } from "node:net";
import ssh2, { type Client, type ClientChannel } from "ssh2";

const { Client: SshClient } = ssh2; // CommonJS: no ESM named exports
import type { Logger } from "../log/logger.js";
import { ConnectTimeoutError, HostKeyMismatchError, PeerGoneError, AccessDeniedError, HsError } from "../domain/errors.js";
import { keyFingerprint } from "./key-fingerprint.js";

export interface ParentEndpoint {
  readonly host: string;
  readonly port: number;
  /** Pinned "SHA256:..." of the parent's host key. */
  readonly hostKeyFingerprint: string;
}

export interface ParentConnectionOptions {
  parent: ParentEndpoint;
  /** The level's own private key (OpenSSH format). */
  userKeyPath?: string;
  privateKey?: string | Buffer;
  connectTimeoutMs: number;
  log: Logger;
}

/** Unanswered keepalives tolerated before the connection is declared dead. */
export const KEEPALIVE_COUNT_MAX = 3;

/**
 * Keepalive interval for a connect timeout: a peer that stops answering (link
 * cut, host frozen) is declared gone after about connectMs (count+1 silent
 * intervals), never sooner than 4 s, so a loaded peer is not taken for dead.
 */
export function keepaliveIntervalMs(connectMs: number): number {
  return Math.max(1000, Math.round(connectMs / KEEPALIVE_COUNT_MAX));
}

export class ParentConnection {
  private client: Client | undefined;
  private connecting: Promise<Client> | undefined;
  private verifiedHostKey: Buffer | undefined;

  constructor(private readonly opts: ParentConnectionOptions) {}

  /** Connects once; later calls share the connection (and reconnect if it dropped). */
  connect(signal?: AbortSignal): Promise<Client> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= this.open(signal).then(
      (c) => { this.client = c; this.connecting = undefined; return c; },
      (err) => { this.connecting = undefined; throw err; },
    );
    return this.connecting;
  }

  private async open(signal?: AbortSignal): Promise<Client> {
    const { parent, log } = this.opts;
    const privateKey = this.opts.privateKey ?? (this.opts.userKeyPath ? await readFile(this.opts.userKeyPath) : undefined);
    if (!privateKey) throw new AccessDeniedError("no user key to authenticate to the parent with");
    const client = new SshClient();
    let mismatch: HostKeyMismatchError | undefined;
    let sockRef: import("node:net").Socket | undefined;
    return new Promise<Client>((resolve, reject) => {
      let settled = false;
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (err) { client.removeAllListeners("ready"); client.on("error", () => {}); client.end(); client.destroy(); sockRef?.destroy(); reject(err); }
        else resolve(client);
      };
      const timer = setTimeout(() => finish(new ConnectTimeoutError(
        `no SSH session with ${parent.host}:${parent.port} within ${this.opts.connectTimeoutMs} ms`,
        { details: { host: parent.host, port: parent.port, timeoutMs: this.opts.connectTimeoutMs } },
      )), this.opts.connectTimeoutMs);
      const onAbort = () => finish(signal?.reason instanceof Error ? signal.reason : new PeerGoneError("connect aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      client.on("ready", () => {
        client.removeAllListeners("error");
        client.on("error", (err) => log.debug({ err: err.message }, "parent connection error"));
        client.on("close", () => { if (this.client === client) this.client = undefined; });
        (client as Client & { setNoDelay(on: boolean): void }).setNoDelay(true);
        finish();
      });
      client.on("error", (err: Error & { level?: string }) => {
        if (mismatch) return finish(mismatch);
        if (err.level === "client-authentication") {
          return finish(new AccessDeniedError("the parent refused this level's key", { details: { host: parent.host, port: parent.port } }));
        }
        finish(new PeerGoneError(`SSH connection to ${parent.host}:${parent.port} failed: ${err.message}`, {
          details: { host: parent.host, port: parent.port }, cause: err,
        }));
      });
      client.on("close", () => finish(mismatch ?? new PeerGoneError("parent closed the connection during setup")));
      // Our own socket so Nagle is off from the first byte: each auth round
      // trip otherwise waits ~40 ms on delayed ACKs.
      const sock = netConnect({ host: parent.host, port: parent.port });
      sock.setNoDelay(true);
      sockRef = sock;
      sock.once("error", (err) => finish(new PeerGoneError(`cannot reach ${parent.host}:${parent.port}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, {
        details: { host: parent.host, port: parent.port }, cause: err,
      })));
      client.connect({
        sock, username: "hsd", privateKey,
        readyTimeout: this.opts.connectTimeoutMs,
        keepaliveInterval: keepaliveIntervalMs(this.opts.connectTimeoutMs),
        keepaliveCountMax: KEEPALIVE_COUNT_MAX,
        hostVerifier: (key: Buffer) => {
          const seen = keyFingerprint(key);
          if (seen === parent.hostKeyFingerprint) { this.verifiedHostKey = Buffer.from(key); return true; }
          mismatch = new HostKeyMismatchError(
            `host key of ${parent.host}:${parent.port} is ${seen}, expected ${parent.hostKeyFingerprint}`,
            { details: { host: parent.host, port: parent.port, expected: parent.hostKeyFingerprint, actual: seen } },
          );
          return false;
        },
      });
    });
  }

  /**
   * The parent's host key as this connection verified it against the pinned
   * fingerprint ("<type> <base64>", a known_hosts entry's key part), so another
   * SSH client can pin the very same key; undefined before a verified connect.
   */
  hostKeyLine(): string | undefined {
    const k = this.verifiedHostKey;
    if (!k || k.length < 4) return undefined;
    const len = k.readUInt32BE(0);
    const type = k.subarray(4, 4 + len).toString("latin1");
    if (!/^[a-z0-9@.-]+$/.test(type)) return undefined;
    return `${type} ${k.toString("base64")}`;
  }

  /** Opens an exec channel (connecting first if needed). */
  async exec(command: string, signal?: AbortSignal): Promise<ClientChannel> {
    const client = await this.connect(signal);
    return new Promise((resolve, reject) => {
      try {
        client.exec(command, (err, ch) => {
          if (err) reject(new PeerGoneError(`parent refused the exec channel: ${err.message}`, { cause: err }));
          else resolve(ch);
        });
      } catch (err) {
        reject(err instanceof HsError ? err : new PeerGoneError("connection to parent is gone", { cause: err }));
      }
    });
  }

  close(): void {
    this.client?.end();
    this.client = undefined;
  }
}
