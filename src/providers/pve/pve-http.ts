// HTTPS exchanges with a PVE API whose certificate is pinned by SHA-256
// fingerprint. The TLS handshake completes and the pin is checked BEFORE any
// byte of the request (and so the token) is sent; without a pin we refuse
// rather than silently skip verification. A connection the API keeps alive is
// reused while fresh (one handshake for a task's polls instead of one each).
// Imported by: src/providers/pve.

import * as tls from "node:tls";
import * as http from "node:http";
import { isIP } from "node:net";
import { CancelledError, CommandTimeoutError, ConnectTimeoutError, PveFingerprintMismatchError, PveNotPinnedError, PveUnreachableError } from "../../domain/errors.js";
import { MAX_CONNECT_MS } from "../../config/config.js";
import { STEP_HINTS } from "../../domain/hints.js";

export interface PveHttpOptions {
  /** https://HOST:8006 (no /api2/json). */
  readonly url: string;
  /** "AA:BB:..." SHA-256 of the API certificate. */
  readonly fingerprint: string;
  /** TCP + TLS establishment; at most 30 s (seed lesson 5). Default 10 s. */
  readonly connectTimeoutMs?: number;
  /** Whole exchange after connect; must exceed pveproxy's 30 s so its 596 reaches us. Default 45 s. */
  readonly requestTimeoutMs?: number;
  /** Upper bound on a response body. Default 16 MiB. */
  readonly maxBodyBytes?: number;
  /** How long a kept-alive connection may sit idle and still be reused. Default REUSE_IDLE_MS. */
  readonly reuseIdleMs?: number;
}

export interface PveHttpRequest {
  readonly method: "GET" | "POST" | "PUT" | "DELETE";
  /** Full path including /api2/json and the query string. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
  readonly signal?: AbortSignal;
}

export interface PveHttpResponse {
  readonly status: number;
  /** HTTP reason phrase: PVE puts the first line of its message here. */
  readonly reason: string;
  readonly body: string;
}


/**
 * A kept-alive connection idle longer than this is closed instead of reused:
 * pveproxy drops one after 5 s idle (AnyEvent::Handle timeout), and a request
 * must never race that close.
 */
export const REUSE_IDLE_MS = 3000;
/** Idle connections kept at most (side-by-side children's calls each hold one while busy). */
const MAX_IDLE = 4;

interface IdleConnection {
  readonly sock: tls.TLSSocket;
  /** The pin it was checked against: a re-pin retires it. */
  readonly fingerprint: string;
  readonly timer: NodeJS.Timeout;
  readonly drop: () => void;
}

/**
 * The TLS context of every PVE API connection: no CA certificates. The pin is
 * what a connection is checked against, never a CA, and a context with node's
 * default roots made a fresh hsd's first connection parse them all: 30-40 ms
 * on the critical path of every new level (less where NODE_EXTRA_CA_CERTS had
 * node load them at its start instead). One context serves every connection.
 */
let pinOnlyContext: tls.SecureContext | undefined;
const pinOnly = () => (pinOnlyContext ??= tls.createSecureContext({ ca: [] }));

/** A reused connection failed before any byte of an answer: the server had closed it. */
class StaleConnection extends Error {
  constructor(readonly failure: Error) { super("kept-alive connection was closed by the server"); }
}

export function normalizeFingerprint(fp: string): string {
  return fp.replace(/[^0-9A-Fa-f]/g, "").toUpperCase().replace(/(..)(?!$)/g, "$1:");
}

export class PveHttp {
  private fingerprint: string;
  private readonly host: string;
  private readonly port: number;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly maxBodyBytes: number;
  private readonly idle: IdleConnection[] = [];
  private readonly reuseIdleMs: number;
  /** TLS connections opened (tests: how many handshakes a sequence of calls cost). */
  connectionsOpened = 0;

  constructor(opts: PveHttpOptions) {
    const u = new URL(opts.url);
    if (u.protocol !== "https:") throw new PveUnreachableError("the PVE API URL must be https", { details: { url: opts.url } });
    this.host = u.hostname.replace(/^\[|\]$/g, "");
    this.port = u.port ? Number(u.port) : 8006;
    this.fingerprint = opts.fingerprint ? normalizeFingerprint(opts.fingerprint) : "";
    this.connectTimeoutMs = Math.min(opts.connectTimeoutMs ?? 10_000, MAX_CONNECT_MS);
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 45_000;
    this.maxBodyBytes = opts.maxBodyBytes ?? 16 * 1024 * 1024;
    this.reuseIdleMs = Math.min(opts.reuseIdleMs ?? REUSE_IDLE_MS, REUSE_IDLE_MS);
  }

  get pinnedFingerprint(): string { return this.fingerprint; }

  /** Re-pin, e.g. after preflight regenerated the node's certificate from a trusted local file. */
  setFingerprint(fp: string): void {
    this.fingerprint = normalizeFingerprint(fp);
    // Connections checked against the old pin are not used again.
    for (const c of this.idle.splice(0)) { c.drop(); c.sock.destroy(); }
  }

  async request(req: PveHttpRequest): Promise<PveHttpResponse> {
    const kept = this.fingerprint ? this.takeIdle() : undefined;
    if (kept) {
      try {
        return await this.exchange(kept, req, true);
      } catch (e) {
        if (!(e instanceof StaleConnection)) throw e;
        // Only a GET is repeated: a write may have reached PVE before the connection died.
        if (req.method !== "GET") throw e.failure;
      }
    }
    const socket = await this.connect(req.signal);
    return this.exchange(socket, req, false);
  }

  private takeIdle(): tls.TLSSocket | undefined {
    for (let c = this.idle.pop(); c; c = this.idle.pop()) {
      c.drop();
      if (c.fingerprint === this.fingerprint && !c.sock.destroyed && c.sock.writable) return c.sock.ref();
      c.sock.destroy();
    }
    return undefined;
  }

  /** A connection the server keeps alive waits here, unref'd, until reused, closed by the server or stale. */
  private keep(sock: tls.TLSSocket): void {
    if (sock.destroyed || !sock.writable || this.idle.length >= MAX_IDLE) { sock.destroy(); return; }
    const gone = () => {
      const at = this.idle.findIndex((c) => c.sock === sock);
      if (at >= 0) this.idle.splice(at, 1)[0]!.drop();
      sock.destroy();
    };
    // An idle connection that errors, ends or speaks is the server's to close: it leaves the pool.
    sock.on("error", gone).on("end", gone).on("close", gone).on("data", gone);
    const timer = setTimeout(gone, this.reuseIdleMs).unref();
    const drop = () => {
      clearTimeout(timer);
      sock.removeListener("error", gone).removeListener("end", gone).removeListener("close", gone).removeListener("data", gone);
    };
    this.idle.push({ sock: sock.unref(), fingerprint: this.fingerprint, timer, drop });
  }

  private connect(signal?: AbortSignal): Promise<tls.TLSSocket> {
    if (!this.fingerprint) {
      return Promise.reject(new PveNotPinnedError("refusing to call the PVE API without a pinned certificate fingerprint", {
        details: { host: this.host, hint: STEP_HINTS.pveNotPinned },
      }));
    }
    if (signal?.aborted) return Promise.reject(asCancel(signal));
    return new Promise((resolve, reject) => {
      // Verification is not skipped: the chain is self-signed by design, so the
      // pin below replaces CA validation and is checked before anything is sent.
      const sock = tls.connect({
        host: this.host, port: this.port, rejectUnauthorized: false, secureContext: pinOnly(),
        servername: isIP(this.host) ? undefined : this.host, ALPNProtocols: ["http/1.1"],
      });
      const done = (err?: Error) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        sock.removeListener("error", onError);
        if (err) { sock.destroy(); reject(err); } else resolve(sock);
      };
      const timer = setTimeout(() => done(new ConnectTimeoutError(
        `no TLS connection to the PVE API within ${this.connectTimeoutMs} ms`, { details: { host: this.host, port: this.port } },
      )), this.connectTimeoutMs);
      const onAbort = () => done(asCancel(signal!));
      const onError = (e: NodeJS.ErrnoException) => done(new PveUnreachableError(
        `cannot reach the PVE API at ${this.host}:${this.port} (${e.code ?? e.message})`,
        { details: { host: this.host, port: this.port, errno: e.code }, cause: e },
      ));
      signal?.addEventListener("abort", onAbort, { once: true });
      sock.on("error", onError);
      this.connectionsOpened++;
      sock.once("secureConnect", () => {
        const actual = normalizeFingerprint(sock.getPeerCertificate().fingerprint256 ?? "");
        if (actual !== this.fingerprint) {
          done(new PveFingerprintMismatchError(
            `PVE API certificate fingerprint mismatch: expected ${this.fingerprint}, got ${actual}`,
            { details: { host: this.host, expected: this.fingerprint, actual } },
          ));
          return;
        }
        done();
      });
    });
  }

  private exchange(sock: tls.TLSSocket, req: PveHttpRequest, reused: boolean): Promise<PveHttpResponse> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let answered = false;
      const finish = (err: Error | null, res?: PveHttpResponse) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.signal?.removeEventListener("abort", onAbort);
        if (err) { r.destroy(); sock.destroy(); reject(err); } else resolve(res!);
      };
      const headers: Record<string, string> = { host: `${this.host}:${this.port}`, connection: "keep-alive", ...req.headers };
      if (req.body !== undefined) headers["content-length"] = String(Buffer.byteLength(req.body));
      const r = http.request({ method: req.method, path: req.path, headers, createConnection: () => sock });
      // Node frees the socket once an answer that keeps the connection alive has been read whole.
      sock.once("free", () => this.keep(sock));
      const timer = setTimeout(() => finish(new CommandTimeoutError(
        `PVE API ${req.method} gave no complete answer within ${this.requestTimeoutMs} ms`, { details: { method: req.method } },
      )), this.requestTimeoutMs);
      const onAbort = () => finish(asCancel(req.signal!));
      req.signal?.addEventListener("abort", onAbort, { once: true });
      r.on("error", (e: NodeJS.ErrnoException) => {
        const err = new PveUnreachableError(`PVE API connection failed during ${req.method} (${e.code ?? e.message})`, { details: { errno: e.code }, cause: e });
        finish(reused && !answered ? new StaleConnection(err) : err);
      });
      r.on("response", (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > this.maxBodyBytes) finish(new PveUnreachableError("PVE API answer too large", { details: { size } }));
          else chunks.push(c);
        });
        res.on("error", (e) => finish(new PveUnreachableError("PVE API answer broke off", { cause: e })));
        res.on("end", () => finish(null, {
          status: res.statusCode ?? 0, reason: res.statusMessage ?? "", body: Buffer.concat(chunks).toString("utf8"),
        }));
      });
      r.end(req.body);
    });
  }
}

function asCancel(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new CancelledError("PVE API call cancelled");
}
