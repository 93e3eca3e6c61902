// An SSH session to a child VM's own OpenSSH (root, this level's private key):
// connect timeout (≤ 30 s) separate from each command's timeout, the host key
// trusted on first use and then pinned; Nagle off, public key auth only.
// Imported by: src/providers/pve.

import { sshKeyFingerprint } from "../../util/ssh-key-fingerprint.js";
import ssh2 from "ssh2";
import { AccessDeniedError, CommandTimeoutError, ConnectTimeoutError, HostKeyMismatchError, HsError, ProviderError } from "../../domain/errors.js";
import { MAX_CONNECT_MS } from "../../config/config.js";
import { withTimeout } from "../../util/timeout.js";
import type { CommandResult } from "../../util/command-runner.js";
import { defaultSleep, type Sleep } from "./pve-client.js";

const { Client } = ssh2; // CommonJS: no ESM named exports

export interface GuestSshOptions {
  readonly host: string;
  readonly port?: number;
  readonly username?: string;
  readonly privateKey: string | Buffer;
  /** "SHA256:..." pinned host key; empty/undefined = trust on first use (then pinned on this object). */
  readonly hostKeyFingerprint?: string;
  /** Handshake + auth; at most 30 s. Default 10 s. */
  readonly connectTimeoutMs?: number;
}

export { sshKeyFingerprint };

export class GuestSsh {
  private constructor(private readonly conn: InstanceType<typeof Client>, readonly hostKeyFingerprint: string) {}

  static connect(o: GuestSshOptions): Promise<GuestSsh> {
    const connectTimeoutMs = Math.min(o.connectTimeoutMs ?? 10_000, MAX_CONNECT_MS);
    return new Promise((resolve, reject) => {
      const conn = new Client();
      let seen = "";
      let mismatch = false;
      conn.on("ready", () => resolve(new GuestSsh(conn, seen)));
      conn.on("error", (e: Error & { level?: string; code?: string }) => {
        conn.end();
        if (mismatch) {
          reject(new HostKeyMismatchError(`host key of ${o.host} changed: expected ${o.hostKeyFingerprint}, got ${seen}`, {
            details: { host: o.host, expected: o.hostKeyFingerprint, actual: seen },
          }));
        } else if (e.level === "client-authentication") {
          reject(new AccessDeniedError(`${o.host} refused our key`, { details: { host: o.host } }));
        } else if (/timed out/i.test(e.message)) {
          reject(new ConnectTimeoutError(`no SSH session with ${o.host}:${o.port ?? 22} within ${connectTimeoutMs} ms`, { details: { host: o.host } }));
        } else {
          reject(new ProviderError(`SSH to ${o.host}:${o.port ?? 22} failed: ${e.message}`, { details: { host: o.host, errno: e.code }, cause: e }));
        }
      });
      conn.connect({
        host: o.host, port: o.port ?? 22, username: o.username ?? "root", privateKey: o.privateKey,
        readyTimeout: connectTimeoutMs, keepaliveInterval: 15_000,
        // Straight to our key: ssh2's default tries `none` first, one more round trip (and
        // OpenSSH's failed-auth delay) to learn what we already know, that only keys work.
        authHandler: ["publickey"],
        hostVerifier: (key: Buffer) => {
          seen = sshKeyFingerprint(key);
          mismatch = !!o.hostKeyFingerprint && o.hostKeyFingerprint !== seen;
          return !mismatch;
        },
      });
      // Nagle off from the first byte (the socket ssh2 just made applies it once connected):
      // with it on, a small write behind another unacknowledged one waits for the VM's delayed
      // ACK, ~40 ms, in the handshake and again in most execs.
      (conn as InstanceType<typeof Client> & { setNoDelay(on: boolean): void }).setNoDelay(true);
    });
  }

  /**
   * Keeps trying to connect until the VM's sshd lets us in: right after boot it
   * refuses connections, and until cloud-init has written authorized_keys it
   * refuses our key. A changed host key is never retried. Bounded by waitMs and
   * the signal; the last error is thrown when the bound passes.
   */
  static async waitFor(o: GuestSshOptions & {
    readonly waitMs: number; readonly signal: AbortSignal; readonly sleep?: Sleep;
    readonly onRetry?: (err: HsError) => void; readonly retryInitialMs?: number; readonly retryMaxMs?: number;
  }): Promise<GuestSsh> {
    const sleep = o.sleep ?? defaultSleep;
    let last: HsError | undefined;
    try {
      return await withTimeout(o.waitMs, () => last ?? new ConnectTimeoutError(`no SSH session with ${o.host} within ${o.waitMs} ms`, {
        details: { host: o.host },
      }), async (signal) => {
        let delay = o.retryInitialMs ?? 500;
        for (;;) {
          try {
            const s = await GuestSsh.connect(o);
            if (signal.aborted) { s.close(); throw signal.reason; }
            return s;
          } catch (e) {
            if (!(e instanceof HsError) || e instanceof HostKeyMismatchError || signal.aborted) throw e;
            if (last?.code !== e.code) o.onRetry?.(e);
            last = e;
          }
          await sleep(delay, signal);
          delay = Math.min(delay * 2, o.retryMaxMs ?? 5000);
        }
      }, o.signal);
    } catch (e) {
      if (e instanceof AccessDeniedError) {
        e.details.hint = "the VM's root account does not accept this level's key: check the cloud-init snippet and the template's sshd";
      }
      throw e;
    }
  }

  /** Runs one command with its own timeout; never rejects for a non-zero exit. */
  exec(cmd: string, opts: { timeoutMs: number; stdin?: Buffer | string; signal?: AbortSignal }): Promise<CommandResult> {
    return withTimeout(opts.timeoutMs, () => new CommandTimeoutError(`remote command did not finish within ${opts.timeoutMs} ms`, {
      details: { command: cmd.split(" ")[0] },
    }), (signal) => new Promise<CommandResult>((resolve, reject) => {
      this.conn.exec(cmd, (err, ch) => {
        if (err) { reject(new ProviderError(`cannot run a remote command: ${err.message}`, { cause: err })); return; }
        let stdout = "";
        let stderr = "";
        signal.addEventListener("abort", () => ch.close(), { once: true });
        ch.on("data", (d: Buffer) => { stdout += d.toString("utf8"); });
        ch.stderr.on("data", (d: Buffer) => { stderr += d.toString("utf8"); });
        ch.on("close", (code: number | null) => resolve({ code: code ?? 255, stdout, stderr }));
        ch.end(opts.stdin);
      });
    }), opts.signal);
  }

  /**
   * Closes the session's socket at once (every exec has returned by then): end() would
   * half-close it and wait for the VM's side, which a VM that is gone (powered off,
   * hung) never closes, so the socket and its process would be held until TCP gives
   * up, ~15 min (and ssh2's destroy() does nothing once end() was called).
   */
  close(): void { this.conn.destroy(); }
}
