// isomorphic-git speaks only smart HTTP; this is an `http` plugin that runs the
// same v0 upload-pack conversation over an SSH exec channel to the parent. One
// session = one fetch = one channel: the GET's advertisement and the POST's
// request/response share it.
// Imported by: src/git.

import type { ClientChannel } from "ssh2";
import type { HttpClient, GitHttpRequest, GitHttpResponse, GitProgressEvent } from "isomorphic-git";
import type { Logger } from "../log/logger.js";
import { CommandTimeoutError, GitProtocolError, HsError, PeerGoneError, RepoNotFoundError, InvalidArgumentError } from "../domain/errors.js";
import { FLUSH_PKT, encodePktLine, parseAdvertisement, readPkt, type Pkt, type RefAdvertisement } from "./pkt-line.js";
import type { ParentConnection } from "../ssh/parent-connection.js";
import { divertPack, type DivertStats } from "./divert-pack.js";

/** The URL handed to isomorphic-git: "http::" makes it pick its HTTP transport, which this plugin implements. */
export function sshRemoteUrl(host: string, port: number, repo: string): string {
  return `http::ssh://${host.includes(":") ? `[${host}]` : host}:${port}/${repo}`;
}

const URL_RE = /^(?:http::)?ssh:\/\/[^/]+\/([A-Za-z0-9][A-Za-z0-9._-]*)\/(info\/refs\?service=git-upload-pack|git-upload-pack)$/;
const MAX_ADVERTISEMENT = 8 * 1024 * 1024;

export interface FetchSessionOptions {
  conn: ParentConnection;
  /** Whole-fetch budget (not the connect timeout). */
  commandTimeoutMs: number;
  log: Logger;
  onProgress?: (ev: GitProgressEvent) => void;
  signal?: AbortSignal;
  /**
   * The bare repo being fetched into. When set, a large pack goes to
   * `git index-pack` there instead of isomorphic-git's JS indexer (see
   * divert-pack.ts for why and how).
   */
  indexPackInto?: string;
  /** Smallest pack (in objects) handed to index-pack; default DIVERT_MIN_OBJECTS. */
  divertMinObjects?: number;
}

/** One fetch's transport. Use `http` with isomorphic-git, then `close()`. */
export class FetchSession {
  /** Bytes received from the parent on this fetch's channel (stdout and stderr). */
  bytes = 0;
  private channel: ClientChannel | undefined;
  private repo: string | undefined;
  private pending: Buffer = Buffer.alloc(0);
  private stderr = "";
  private exitCode: number | undefined;
  private closed = false;
  private closeWaiters: (() => void)[] = [];
  private dataWaiter: (() => void) | undefined;
  private failure: HsError | undefined;
  private timer: NodeJS.Timeout | undefined;

  readonly http: HttpClient;
  /** Whether this fetch's pack went to git index-pack, and its object count. */
  readonly pack: DivertStats = { diverted: false, objects: 0 };

  constructor(private readonly opts: FetchSessionOptions) {
    this.http = { request: (req) => this.request(req) };
  }

  /** The typed error that ended this fetch, if any (isomorphic-git wraps errors it sees). */
  get error(): HsError | undefined { return this.failure; }

  private fail(err: HsError): void {
    this.failure ??= err;
    this.channel?.destroy();
  }

  private async request(req: GitHttpRequest): Promise<GitHttpResponse> {
    const m = URL_RE.exec(req.url);
    if (!m) throw new InvalidArgumentError("not an hsd ssh remote URL");
    const repo = m[1]!;
    if (req.method === "GET" && m[2]!.startsWith("info/refs")) return this.discover(req, repo);
    if (req.method === "POST" && m[2] === "git-upload-pack") return this.uploadPack(req, repo);
    throw new InvalidArgumentError("unsupported request on the ssh transport", { details: { method: req.method } });
  }

  private async open(repo: string): Promise<ClientChannel> {
    if (this.channel) throw new GitProtocolError("fetch session already used");
    this.repo = repo;
    this.t0 = performance.now();
    const ch = await this.opts.conn.exec(`git-upload-pack '${repo}'`, this.opts.signal);
    this.opts.log.trace({ repo, ms: Math.round(performance.now() - this.t0) }, "exec channel open");
    this.channel = ch;
    this.timer = setTimeout(() => this.fail(new CommandTimeoutError(
      `fetch of ${repo} exceeded ${this.opts.commandTimeoutMs} ms`, { details: { repo, timeoutMs: this.opts.commandTimeoutMs } },
    )), this.opts.commandTimeoutMs);
    const onAbort = () => this.fail(new PeerGoneError("fetch cancelled", { details: { repo } }));
    this.opts.signal?.addEventListener("abort", onAbort, { once: true });
    ch.on("data", (b: Buffer) => {
      this.bytes += b.length;
      this.pending = this.pending.length ? Buffer.concat([this.pending, b]) : b;
      if (this.pending.length > MAX_ADVERTISEMENT && !this.posted) {
        this.fail(new GitProtocolError("ref advertisement too large", { details: { repo } }));
      }
      this.wake();
    });
    ch.stderr.on("data", (b: Buffer) => {
      this.bytes += b.length;
      if (this.stderr.length < 4096) this.stderr += b.toString("utf8");
    });
    ch.on("exit", (code: number | null) => { this.exitCode = code ?? 255; });
    ch.on("error", () => {});
    // Exit status is judged on 'close', not EOF: exit-status may arrive after EOF.
    ch.on("close", () => {
      this.closed = true;
      clearTimeout(this.timer);
      this.opts.signal?.removeEventListener("abort", onAbort);
      this.wake();
      for (const w of this.closeWaiters.splice(0)) w();
    });
    return ch;
  }

  private posted = false;
  private t0 = 0;

  private wake(): void {
    const w = this.dataWaiter;
    this.dataWaiter = undefined;
    w?.();
  }

  private waitData(): Promise<void> {
    return new Promise((r) => { this.dataWaiter = r; });
  }

  /** The error the remote reported, once the channel has closed. */
  private remoteError(advertisedErr?: string): HsError {
    if (this.failure) return this.failure;
    const text = advertisedErr ?? this.stderr.replace(/^hsd: /, "").trim();
    const details = { repo: this.repo, exitCode: this.exitCode };
    if (/no such repo/.test(text)) return new RepoNotFoundError(`parent has no repo ${this.repo}`, { details });
    return new GitProtocolError(`upload-pack for ${this.repo} failed${this.exitCode !== undefined ? ` (exit ${this.exitCode})` : ""}: ${text.split("\n")[0]?.slice(0, 200) ?? ""}`, { details });
  }

  private advertised: { repo: string; pkts: Pkt[]; ad: RefAdvertisement } | undefined;

  /**
   * Opens the channel and reads the parent's ref advertisement (once per
   * session). sync-from-parent calls this first to skip repos that did not
   * change; isomorphic-git's GET then gets the same advertisement.
   */
  async advertisement(repo: string): Promise<RefAdvertisement> {
    if (this.advertised) {
      if (this.advertised.repo !== repo) throw new GitProtocolError("fetch session already used for another repo");
      return this.advertised.ad;
    }
    await this.open(repo);
    const pkts: Pkt[] = [];
    let off = 0;
    for (;;) {
      let r;
      try {
        r = readPkt(this.pending, off);
      } catch (err) {
        this.fail(err as HsError);
        throw err;
      }
      if (r) {
        off += r.used;
        pkts.push(r.pkt);
        if (r.pkt.type === "data" && pkts.length === 1 && r.pkt.payload.subarray(0, 4).toString() === "ERR ") break;
        if (r.pkt.type === "flush") break;
        continue;
      }
      if (this.closed) {
        await this.whenClosed();
        throw this.remoteError();
      }
      await this.waitData();
    }
    this.pending = this.pending.subarray(off);
    this.opts.log.trace({ repo, ms: Math.round(performance.now() - this.t0) }, "advertisement read");
    let ad: RefAdvertisement;
    try {
      ad = parseAdvertisement(pkts);
    } catch (err) {
      this.fail(err as HsError);
      throw err;
    }
    if (ad.error !== undefined) {
      await this.whenClosed();
      const err = this.remoteError(ad.error);
      this.failure ??= err;
      throw err;
    }
    this.advertised = { repo, pkts, ad };
    return ad;
  }

  /** Ends the conversation before any want: upload-pack reads a flush and exits 0. */
  async nothingWanted(): Promise<void> {
    if (this.channel && !this.closed && !this.posted) {
      this.posted = true;
      this.channel.write(FLUSH_PKT);
      this.channel.end();
      const ch = this.channel;
      const t = setTimeout(() => ch.destroy(), 5_000);
      await this.whenClosed();
      clearTimeout(t);
    }
  }

  private async discover(req: GitHttpRequest, repo: string): Promise<GitHttpResponse> {
    await this.advertisement(repo);
    const pkts = this.advertised!.pkts;
    // Peeled "^{}" lines: git over SSH v0 refuses wants for them.
    const lines: Buffer[] = [encodePktLine("# service=git-upload-pack\n"), FLUSH_PKT];
    let first = true;
    for (const p of pkts) {
      if (p.type !== "data") continue;
      const text = p.payload.toString("utf8");
      const isPeeled = /^[0-9a-f]{40} [^\0\n]+\^\{\}(\0|\n|$)/.test(text) && !text.includes(" capabilities^{}");
      if (isPeeled && !first) continue;
      lines.push(p.payload.length ? encodePktLine(p.payload) : Buffer.alloc(0));
      first = false;
    }
    lines.push(FLUSH_PKT);
    this.opts.onProgress?.({ phase: "Discovering refs", loaded: this.bytes, total: 0 });
    return {
      url: req.url, method: "GET", statusCode: 200, statusMessage: "OK",
      headers: { "content-type": "application/x-git-upload-pack-advertisement" },
      body: (async function* () { yield Buffer.concat(lines); })(),
    };
  }

  private whenClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((r) => this.closeWaiters.push(r));
  }

  private async uploadPack(req: GitHttpRequest, repo: string): Promise<GitHttpResponse> {
    const ch = this.channel;
    if (!ch || this.repo !== repo) throw new GitProtocolError("POST without a matching advertisement on this session");
    if (this.closed) throw this.remoteError();
    this.posted = true;
    if (req.body) {
      for await (const chunk of req.body as AsyncIterable<Uint8Array> | Iterable<Uint8Array>) ch.write(Buffer.from(chunk));
    }
    const self = this;
    async function* body(): AsyncGenerator<Buffer> {
      for (;;) {
        if (self.pending.length > 0) {
          const b = self.pending;
          self.pending = Buffer.alloc(0);
          self.opts.onProgress?.({ phase: "Receiving bytes", loaded: self.bytes, total: 0 });
          yield b;
          continue;
        }
        if (self.closed) break;
        await self.waitData();
      }
      self.opts.log.trace({ repo, ms: Math.round(performance.now() - self.t0) }, "upload-pack response complete");
      if (self.failure || self.exitCode !== 0) throw self.remoteError();
    }
    const gitdir = this.opts.indexPackInto;
    async function* diverted(): AsyncGenerator<Uint8Array> {
      try {
        yield* divertPack(body(), {
          gitdir: gitdir!, repo, log: self.opts.log, minObjects: self.opts.divertMinObjects,
          onProgress: self.opts.onProgress,
        }, self.pack);
      } catch (err) {
        // Keep our typed error: isomorphic-git would only see a failed stream.
        if (err instanceof HsError) self.failure ??= err;
        throw err;
      }
    }
    return {
      url: req.url, method: "POST", statusCode: 200, statusMessage: "OK",
      headers: { "content-type": "application/x-git-upload-pack-result" },
      body: gitdir ? diverted() : body(),
    };
  }

  /** Ends the channel (a fetch with nothing to want never POSTs) and waits for it to close. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    if (this.channel && !this.closed) {
      this.channel.end();
      this.channel.close();
      // A peer that never answers CLOSE must not hold the sync: bounded wait.
      const ch = this.channel;
      const t = setTimeout(() => ch.destroy(), 5_000);
      await this.whenClosed();
      clearTimeout(t);
    }
  }
}
