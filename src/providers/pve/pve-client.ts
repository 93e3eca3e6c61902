// The PVE API client: token auth, {"data":...} envelopes, PVE errors mapped to
// typed errors, bounded retries of pveproxy failures for GETs only, and task
// (UPID) waiting with its log streamed as progress. The token secret lives only
// inside this object. Product code calls api(): requests and answers typed by
// PVE's own schema.
// Imported by: src/providers/pve.

import { CommandTimeoutError, HsError, PveApiError, PveAuthError, PveProxyError, PveTaskError } from "../../domain/errors.js";
import { withTimeout, throwIfAborted } from "../../util/timeout.js";
import { PveHttp, type PveHttpOptions, type PveHttpResponse } from "./pve-http.js";
import { parseUpid } from "./upid.js";
import { expandEndpoint, type PveEndpoint, type PveParams, type PveReturns } from "./pve-api.js";

/** Parameters as they go on the wire (form body or query). */
export type WireParams = Readonly<Record<string, string | number | boolean | undefined>>;
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

export interface PveClientOptions extends PveHttpOptions {
  /** USER@REALM!TOKENID */
  readonly tokenId: string;
  /** The token's UUID secret, from the level's secrets.yaml (pve.token_secret). */
  readonly tokenSecret: string;
  /** Retries of 595/596 on GET (never on writes). Default 3. */
  readonly proxyRetries?: number;
  /** First backoff of those retries; doubles each time. Default 1000 ms. */
  readonly proxyRetryBaseMs?: number;
  readonly sleep?: Sleep;
  /** The clock task waits measure elapsed time by. Default Date.now. */
  readonly now?: () => number;
}

export interface CallOptions { readonly signal?: AbortSignal }

export type TaskStatus = PveReturns<"GET /nodes/{node}/tasks/{upid}/status">;

export interface WaitTaskOptions extends CallOptions {
  /** New task log lines, in order, as they appear. */
  readonly onLog?: (lines: readonly string[]) => void;
  /** Shortest pause between status polls (see taskPollDelay). Default TASK_POLL_MIN_MS. */
  readonly pollInitialMs?: number;
  /** Longest pause between status polls. Default 2 s. */
  readonly pollMaxMs?: number;
  /** While the task runs its log is read at most this often (and once more when it stops). Default 1 s. */
  readonly logEveryMs?: number;
  /** Hard bound on the whole wait (besides the signal). Default 10 min. */
  readonly timeoutMs?: number;
}

export const defaultSleep: Sleep = (ms, signal) => new Promise((resolve, reject) => {
  if (signal?.aborted) { reject(signal.reason); return; }
  const t = setTimeout(() => { signal?.removeEventListener("abort", onAbort); resolve(); }, ms);
  const onAbort = () => { clearTimeout(t); reject(signal!.reason); };
  signal?.addEventListener("abort", onAbort, { once: true });
});

/**
 * The shortest pause between a task's status polls: 2% of a 1 s task (PVE's
 * quick tasks: config, start, template), so those too end within 2% of their run
 * time. The polls ride one kept-alive connection (pve-http.ts); each is a read
 * of the task's status for pveproxy.
 */
export const TASK_POLL_MIN_MS = 20;

/**
 * The pause before the next status poll of a task that has run `elapsedMs`: 0.5%
 * of that, within [minMs, maxMs]. A finished task is so noticed within max(minMs,
 * 0.5% of its run time), a quarter of hsd's goal for its own time per level (2%):
 * the lag after a 5 s clone is ~12 ms on average (at 1% it was 25, at 2% 50). A
 * long task still costs a poll every maxMs, not every minMs. A task status GET is
 * cheap for PVE (a read of the task's file): a 5 s clone costs ~245 polls (~190 at
 * 1%; the floor sets the first 4 s), a 1 s task ~50.
 */
export function taskPollDelay(elapsedMs: number, minMs: number, maxMs: number): number {
  return Math.min(maxMs, Math.max(minMs, Math.round(elapsedMs / 200)));
}

/** True when err is a PVE answer with this HTTP status whose message (or 400 errors map) matches re. */
export function isPveError(err: unknown, status: number, re?: RegExp): err is PveApiError {
  if (!(err instanceof PveApiError) || err.details.status !== status) return false;
  if (!re) return true;
  const errors = (err.details.errors ?? {}) as Record<string, string>;
  return re.test(String(err.details.pveMessage ?? "")) || Object.values(errors).some((v) => re.test(String(v)));
}

/** The form body PVE expects; undefined values are left out. */
export function formEncode(params: WireParams | undefined): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params ?? {})) if (v !== undefined) sp.append(k, typeof v === "boolean" ? (v ? "1" : "0") : String(v));
  return sp.toString();
}

export class PveClient {
  readonly tokenId: string;
  private readonly http: PveHttp;
  private readonly authHeader: string;
  private readonly proxyRetries: number;
  private readonly proxyRetryBaseMs: number;
  private readonly sleep: Sleep;
  private readonly now: () => number;

  constructor(opts: PveClientOptions) {
    this.http = new PveHttp(opts);
    this.tokenId = opts.tokenId;
    this.authHeader = `PVEAPIToken=${opts.tokenId}=${opts.tokenSecret}`;
    this.proxyRetries = opts.proxyRetries ?? 3;
    this.proxyRetryBaseMs = opts.proxyRetryBaseMs ?? 1000;
    this.sleep = opts.sleep ?? defaultSleep;
    this.now = opts.now ?? Date.now;
  }

  get fingerprint(): string { return this.http.pinnedFingerprint; }
  setFingerprint(fp: string): void { this.http.setFingerprint(fp); }

  // Keep the secret out of util.inspect / JSON dumps of the client.
  toJSON(): Record<string, string> { return { tokenId: this.tokenId }; }
  [Symbol.for("nodejs.util.inspect.custom")](): string { return `PveClient(${this.tokenId})`; }

  /**
   * One endpoint of PVE's schema with all its parameters, path ones included:
   * `api("GET /nodes/{node}/qemu/{vmid}/config", { node, vmid })`. Parameter
   * names and types, and the answer's fields, are checked by tsc against pve-schema.ts.
   */
  async api<E extends PveEndpoint>(endpoint: E, params: PveParams<E>, o: CallOptions = {}): Promise<PveReturns<E>> {
    const { method, path, rest } = expandEndpoint(endpoint, params);
    return (await this.call(method, path, rest, o)).data as PveReturns<E>;
  }

  /**
   * One call by concrete path, untyped; the whole envelope (task logs carry
   * `total` beside `data`). Product code goes through api(); tests use this for
   * routes outside the schema table.
   */
  async call(method: "GET" | "POST" | "PUT" | "DELETE", path: string, params: WireParams | undefined, o: CallOptions): Promise<Record<string, unknown>> {
    const inQuery = method === "GET" || method === "DELETE";
    const qs = inQuery ? formEncode(params) : "";
    const fullPath = `/api2/json${path}${qs ? `?${qs}` : ""}`;
    const headers: Record<string, string> = { authorization: this.authHeader, accept: "application/json" };
    const body = inQuery ? undefined : formEncode(params);
    if (body !== undefined) headers["content-type"] = "application/x-www-form-urlencoded";
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(o.signal);
      const res = await this.http.request({ method, path: fullPath, headers, body, signal: o.signal });
      if (res.status === 200) return parseEnvelope(res, method, path);
      const err = mapError(res, method, path);
      // Only GETs are safe to repeat: a write behind a 596 may still be running.
      if (err instanceof PveProxyError && res.status !== 597 && method === "GET" && attempt < this.proxyRetries) {
        await this.sleep(this.proxyRetryBaseMs * 2 ** attempt, o.signal);
        continue;
      }
      throw err;
    }
  }

  /** Waits until the task stops; resolves on OK / WARNINGS: n, throws PveTaskError otherwise. */
  async waitTask(upid: string, o: WaitTaskOptions = {}): Promise<TaskStatus> {
    const u = parseUpid(upid);
    const at = { node: u.node, upid };
    const timeoutMs = o.timeoutMs ?? 600_000;
    return withTimeout(timeoutMs, () => new CommandTimeoutError(`PVE task ${u.type} ${u.id} did not finish within ${timeoutMs} ms`, {
      details: { upid, type: u.type },
    }), async (signal) => {
      const minDelay = o.pollInitialMs ?? TASK_POLL_MIN_MS;
      const maxDelay = o.pollMaxMs ?? 2000;
      const logEveryMs = o.logEveryMs ?? 1000;
      const t0 = this.now();
      let logStart = 0;
      let loggedAt = -Infinity;
      let misses = 0;
      for (;;) {
        let st: TaskStatus;
        try {
          st = await this.api("GET /nodes/{node}/tasks/{upid}/status", at, { signal });
        } catch (err) {
          // A just-created UPID can be unknown for a moment; bounded by `misses` (about 5 s at the
          // shortest pause, as the 250 ms backoff's 20 allowed) and the timeout.
          if (isPveError(err, 400, /no such task/) && misses++ < Math.ceil(5000 / minDelay)) { await this.sleep(minDelay, signal); continue; }
          throw err;
        }
        // The log costs a request of its own: read it about once a second while the task runs, and its end once stopped.
        if (o.onLog && (st.status === "stopped" || this.now() - loggedAt >= logEveryMs)) {
          loggedAt = this.now();
          logStart = await this.drainLog(at, logStart, o.onLog, signal);
        }
        if (st.status === "stopped") {
          const exit = st.exitstatus ?? "";
          if (exit === "OK" || /^WARNINGS: \d+$/.test(exit)) return st;
          throw new PveTaskError(`PVE task ${u.type} ${u.id} failed: ${exit}`, {
            details: { upid, node: u.node, type: u.type, id: u.id, exitstatus: exit },
          });
        }
        await this.sleep(taskPollDelay(this.now() - t0, minDelay, maxDelay), signal);
      }
    }, o.signal);
  }

  private async drainLog(at: { node: string; upid: string }, start: number, onLog: (lines: readonly string[]) => void, signal: AbortSignal): Promise<number> {
    const limit = 50;
    for (let pages = 0; pages < 100; pages++) {
      const data = await this.api("GET /nodes/{node}/tasks/{upid}/log", { ...at, start, limit }, { signal });
      const lines = Array.isArray(data) ? data : [];
      if (lines.length === 0) break;
      start += lines.length;
      onLog(lines.map((l) => l.t));
      if (lines.length < limit) break;
    }
    return start;
  }
}

function parseEnvelope(res: PveHttpResponse, method: string, path: string): Record<string, unknown> {
  try {
    const v = JSON.parse(res.body) as unknown;
    if (v && typeof v === "object" && "data" in v) return v as Record<string, unknown>;
  } catch { /* fall through */ }
  throw new PveApiError(`PVE ${method} ${path}: answer is not a {"data":...} envelope`, { details: { status: res.status, method, path } });
}

function mapError(res: PveHttpResponse, method: string, path: string): HsError {
  let message = "";
  let errors: Record<string, string> | undefined;
  if (res.body) {
    try {
      const v = JSON.parse(res.body) as { message?: unknown; errors?: unknown };
      if (typeof v.message === "string") message = v.message;
      if (v.errors && typeof v.errors === "object") errors = v.errors as Record<string, string>;
    } catch { /* PVE's 401 and proxy errors have no JSON body */ }
  }
  const first = (message || res.reason).split("\n")[0]!.trim();
  const details = { status: res.status, method, path, pveMessage: first, ...(errors ? { errors } : {}) };
  const suffix = errors ? ` (${Object.entries(errors).map(([k, v]) => `${k}: ${String(v).trim()}`).join("; ")})` : "";
  if (res.status === 401) {
    return new PveAuthError(`PVE refused the API token (401 ${first}): check pve.token_id and pve.token_secret`, { details });
  }
  if (res.status >= 595 && res.status <= 597) {
    return new PveProxyError(`pveproxy failed ${method} ${path}: ${res.status} ${first}`, { details });
  }
  return new PveApiError(`PVE ${method} ${path}: ${res.status} ${first}${suffix}`, { details });
}
