// isomorphic-git speaks only smart HTTP; this is an `http` plugin that runs
// the same v0 upload-pack conversation over an SSH exec channel to the
// parent. One session = one fetch = one channel (a ChannelStream, see
// src/ssh/channel-stream.ts): the GET's advertisement and the POST's
// request/response share it.
// Imported by: src/git.

import type { HttpClient, GitHttpRequest, GitHttpResponse, GitProgressEvent } from "isomorphic-git";
import type { Logger } from "../log/logger.js";
import { GitProtocolError, HsError, PeerGoneError, RepoNotFoundError, InvalidArgumentError } from "../domain/errors.js";
import { FLUSH_PKT, PktStreamReader, encodePktLine, parseAdvertisement, type Pkt, type RefAdvertisement } from "./pkt-line.js";
import { ChannelStream, type ChannelOpener } from "../ssh/channel-stream.js";
import { divertPack, type DivertStats, type IndexPack } from "./divert-pack.js";

/** The URL handed to isomorphic-git: "http::" makes it pick its HTTP transport, which this plugin implements. */
export function sshRemoteUrl(host: string, port: number, repo: string): string {
  return `http::ssh://${host.includes(":") ? `[${host}]` : host}:${port}/${repo}`;
}

const URL_RE = /^(?:http::)?ssh:\/\/[^/]+\/([A-Za-z0-9][A-Za-z0-9._-]*)\/(info\/refs\?service=git-upload-pack|git-upload-pack)$/;
const MAX_ADVERTISEMENT = 8 * 1024 * 1024;

export interface FetchSessionOptions {
  conn: ChannelOpener;
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
  /** A new, empty working tree: index-pack's process may then check it out (pack.readTree, divert-pack.ts). */
  checkoutInto?: string;
  /** An index-pack already started for this fetch's pack (divert-pack.ts DivertPackOptions.indexPack). */
  indexPack?: IndexPack;
  /** Called once the exec channel has been asked for (its request is on the wire; the parent's answer is not in yet). */
  onChannelAsked?: () => void;
}

/** At most one "Receiving bytes" progress event per this many ms (a 500 MB pack is 16,000 SSH packets). */
const PROGRESS_INTERVAL_MS = 100;

/**
 * One fetch's transport. Use `http` with isomorphic-git, then `close()`.
 * Everything is pulled from the channel's ChannelStream as the consumer
 * (isomorphic-git, or index-pack through divert-pack) asks for it, so a slow
 * consumer pauses the channel and the parent, and no buffer grows with the pack.
 */
export class FetchSession {
  private stream: ChannelStream | undefined;
  private reader: PktStreamReader | undefined;
  private repo: string | undefined;
  private failure: HsError | undefined;
  private posted = false;
  private t0 = 0;
  private lastProgress = 0;

  readonly http: HttpClient;
  /** Whether this fetch's pack went to git index-pack, and its object count. */
  readonly pack: DivertStats = { diverted: false, objects: 0 };

  constructor(private readonly opts: FetchSessionOptions) {
    this.http = { request: (req) => this.request(req) };
  }

  /** Bytes received from the parent on this fetch's channel (stdout and stderr). */
  get bytes(): number { return this.stream?.bytes ?? 0; }

  /** The typed error that ended this fetch, if any (isomorphic-git wraps errors it sees). */
  get error(): HsError | undefined { return this.failure ?? this.stream?.error; }

  private fail(err: HsError): void {
    this.failure ??= err;
    this.stream?.fail(err);
  }

  private async request(req: GitHttpRequest): Promise<GitHttpResponse> {
    const m = URL_RE.exec(req.url);
    if (!m) throw new InvalidArgumentError("not an hsd ssh remote URL");
    const repo = m[1]!;
    if (req.method === "GET" && m[2]!.startsWith("info/refs")) return this.discover(req, repo);
    if (req.method === "POST" && m[2] === "git-upload-pack") return this.uploadPack(req, repo);
    throw new InvalidArgumentError("unsupported request on the ssh transport", { details: { method: req.method } });
  }

  private async open(repo: string): Promise<ChannelStream> {
    if (this.stream) throw new GitProtocolError("fetch session already used");
    this.repo = repo;
    this.t0 = performance.now();
    const opening = ChannelStream.exec(this.opts.conn, `git-upload-pack '${repo}'`, {
      commandTimeoutMs: this.opts.commandTimeoutMs, label: `fetch of ${repo}`, details: { repo }, signal: this.opts.signal,
    });
    this.opts.onChannelAsked?.();
    const stream = await opening;
    this.opts.log.trace({ repo, ms: Math.round(performance.now() - this.t0) }, "exec channel open");
    this.stream = stream;
    this.reader = new PktStreamReader(() => stream.read());
    return stream;
  }

  /** The error the remote reported, once the channel has closed. */
  private remoteError(advertisedErr?: string): HsError {
    const own = this.error;
    if (own) return own;
    const exitCode = this.stream?.exitCode;
    const text = advertisedErr ?? (this.stream?.stderr ?? "").replace(/^hsd: /, "").trim();
    const details = { repo: this.repo, exitCode };
    // No exit status at all: the channel or the connection went away under the fetch (parent gone, link cut).
    if (exitCode === undefined && advertisedErr === undefined && !text) {
      return new PeerGoneError(`the parent closed the fetch of ${this.repo} without an exit status`, { details });
    }
    if (/no such repo/.test(text)) return new RepoNotFoundError(`parent has no repo ${this.repo}`, { details });
    return new GitProtocolError(`upload-pack for ${this.repo} failed${exitCode !== undefined ? ` (exit ${exitCode})` : ""}: ${text.split("\n")[0]?.slice(0, 200) ?? ""}`, { details });
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
    const stream = await this.open(repo);
    const pkts: Pkt[] = [];
    let size = 0;
    for (;;) {
      let r;
      try {
        r = await this.reader!.read();
      } catch (err) {
        // The parent hung up mid-packet: its exit status and stderr say why. Anything else ends the fetch as is.
        if (!this.reader!.truncated) { if (err instanceof HsError) this.fail(err); throw err; }
      }
      if (!r) {
        await stream.closed();
        throw this.remoteError();
      }
      pkts.push(r.pkt);
      size += r.raw.length;
      if (size > MAX_ADVERTISEMENT) {
        const err = new GitProtocolError("ref advertisement too large", { details: { repo } });
        this.fail(err);
        throw err;
      }
      if (r.pkt.type === "data" && pkts.length === 1 && r.pkt.payload.subarray(0, 4).toString() === "ERR ") break;
      if (r.pkt.type === "flush") break;
    }
    this.opts.log.trace({ repo, ms: Math.round(performance.now() - this.t0) }, "advertisement read");
    let ad: RefAdvertisement;
    try {
      ad = parseAdvertisement(pkts);
    } catch (err) {
      this.fail(err as HsError);
      throw err;
    }
    if (ad.error !== undefined) {
      await stream.closed();
      const err = this.remoteError(ad.error);
      this.failure ??= err;
      throw err;
    }
    this.advertised = { repo, pkts, ad };
    return ad;
  }

  /** Ends the conversation before any want: upload-pack reads a flush and exits 0. */
  async nothingWanted(): Promise<void> {
    const stream = this.stream;
    if (stream && !stream.closedNow && !this.posted) {
      this.posted = true;
      await stream.write(FLUSH_PKT).catch(() => {});
      await stream.close();
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

  private progress(): void {
    const now = performance.now();
    if (now - this.lastProgress < PROGRESS_INTERVAL_MS) return;
    this.lastProgress = now;
    this.opts.onProgress?.({ phase: "Receiving bytes", loaded: this.bytes, total: 0 });
  }

  private async uploadPack(req: GitHttpRequest, repo: string): Promise<GitHttpResponse> {
    if (!this.stream || this.repo !== repo) throw new GitProtocolError("POST without a matching advertisement on this session");
    const stream = this.stream;
    if (stream.closedNow) throw this.remoteError();
    this.posted = true;
    if (req.body) {
      for await (const chunk of req.body as AsyncIterable<Uint8Array> | Iterable<Uint8Array>) await stream.write(Buffer.from(chunk));
    }
    const self = this;
    // Raw response chunks, pulled: bytes the advertisement's reader had already taken go first.
    async function* body(): AsyncGenerator<Buffer> {
      const rest = self.reader!.takeRest();
      if (rest.length > 0) yield rest;
      for (let b = await stream.read(); b; b = await stream.read()) {
        self.progress();
        yield b;
      }
      await stream.closed();
      self.opts.onProgress?.({ phase: "Receiving bytes", loaded: self.bytes, total: 0 });
      self.opts.log.trace({ repo, ms: Math.round(performance.now() - self.t0) }, "upload-pack response complete");
      if (self.error || stream.exitCode !== 0) throw self.remoteError();
    }
    const gitdir = this.opts.indexPackInto;
    async function* diverted(): AsyncGenerator<Uint8Array> {
      try {
        yield* divertPack(body(), {
          gitdir: gitdir!, repo, log: self.opts.log, minObjects: self.opts.divertMinObjects,
          onProgress: self.opts.onProgress, signal: stream.signal,
          ...(self.opts.checkoutInto ? { checkoutInto: self.opts.checkoutInto } : {}),
          ...(self.opts.indexPack ? { indexPack: self.opts.indexPack } : {}),
        }, self.pack);
      } catch (err) {
        // Keep our typed error: isomorphic-git would only see a failed stream.
        if (err instanceof HsError) self.fail(err);
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
    await this.stream?.close();
  }
}
