// One HTTPS exchange with a PVE API whose certificate is pinned by SHA-256
// fingerprint. The TLS handshake completes and the pin is checked BEFORE any
// byte of the request (and so the token) is sent; without a pin we refuse
// rather than silently skip verification.
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

  constructor(opts: PveHttpOptions) {
    const u = new URL(opts.url);
    if (u.protocol !== "https:") throw new PveUnreachableError("the PVE API URL must be https", { details: { url: opts.url } });
    this.host = u.hostname.replace(/^\[|\]$/g, "");
    this.port = u.port ? Number(u.port) : 8006;
    this.fingerprint = opts.fingerprint ? normalizeFingerprint(opts.fingerprint) : "";
    this.connectTimeoutMs = Math.min(opts.connectTimeoutMs ?? 10_000, MAX_CONNECT_MS);
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 45_000;
    this.maxBodyBytes = opts.maxBodyBytes ?? 16 * 1024 * 1024;
  }

  get pinnedFingerprint(): string { return this.fingerprint; }

  /** Re-pin, e.g. after preflight regenerated the node's certificate from a trusted local file. */
  setFingerprint(fp: string): void { this.fingerprint = normalizeFingerprint(fp); }

  async request(req: PveHttpRequest): Promise<PveHttpResponse> {
    const socket = await this.connect(req.signal);
    return this.exchange(socket, req);
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
        host: this.host, port: this.port, rejectUnauthorized: false,
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

  private exchange(sock: tls.TLSSocket, req: PveHttpRequest): Promise<PveHttpResponse> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const finish = (err: Error | null, res?: PveHttpResponse) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.signal?.removeEventListener("abort", onAbort);
        if (err) { r.destroy(); sock.destroy(); reject(err); } else resolve(res!);
      };
      const headers: Record<string, string> = { host: `${this.host}:${this.port}`, connection: "close", ...req.headers };
      if (req.body !== undefined) headers["content-length"] = String(Buffer.byteLength(req.body));
      const r = http.request({ method: req.method, path: req.path, headers, createConnection: () => sock });
      const timer = setTimeout(() => finish(new CommandTimeoutError(
        `PVE API ${req.method} gave no complete answer within ${this.requestTimeoutMs} ms`, { details: { method: req.method } },
      )), this.requestTimeoutMs);
      const onAbort = () => finish(asCancel(req.signal!));
      req.signal?.addEventListener("abort", onAbort, { once: true });
      r.on("error", (e: NodeJS.ErrnoException) => finish(new PveUnreachableError(
        `PVE API connection failed during ${req.method} (${e.code ?? e.message})`, { details: { errno: e.code }, cause: e },
      )));
      r.on("response", (res) => {
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
