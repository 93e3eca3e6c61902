// The one streaming path over a level's SSH connection: a pull-based,
// backpressured view of an ssh2 channel (exec: a fetch's upload-pack, the
// image transfer) and a two-way pipe between a channel and a local socket
// (the gRPC tunnel, both ends). Nothing here buffers more than a fixed amount
// whatever the transfer's size.
// Imported by: src/git, src/ssh, src/images.
//
// Why pause/resume: ssh2 extends a channel's window only while its readable
// side accepts data; once our queue passes highWaterMark the channel is
// paused, ssh2's own 2 MiB buffer fills, it stops sending WINDOW_ADJUST and
// the peer stops. Memory is then queue + ssh2's buffer + one window, at most.

import type { Duplex, Readable } from "node:stream";
import { CancelledError, CommandTimeoutError, type HsError, PeerGoneError } from "../domain/errors.js";

/** What ChannelStream needs of an ssh2 ClientChannel (exec) or any duplex with a stderr side. */
export interface StreamChannel extends Duplex {
  readonly stderr: Readable;
}

/** Opens exec channels (the level's ParentConnection). */
export interface ChannelOpener {
  exec(command: string, signal?: AbortSignal): Promise<StreamChannel>;
}

export interface ChannelStreamOptions {
  /** Budget for the whole command, from open to close (never the connect timeout). */
  commandTimeoutMs: number;
  /** What runs, for messages: "fetch of bootstrap". */
  label: string;
  /** Secret-free context put on every error, e.g. { repo }. */
  details?: Record<string, unknown>;
  signal?: AbortSignal;
  /** Bytes queued before the channel is paused; default 1 MiB. */
  highWaterMark?: number;
  /** stderr kept for error messages; the rest is read and dropped. Default 4 KiB. */
  stderrLimit?: number;
}

export const DEFAULT_HIGH_WATER_MARK = 1 << 20;

/**
 * One channel's stdout as a pull stream: `read()` returns the next chunk
 * as ssh2 delivered it (no copy, no concatenation), `undefined` at EOF, or
 * throws the typed error that ended the command (CommandTimeout, Cancelled,
 * PeerGone). `write()` waits for the channel to drain. The exit status is
 * known once `closed()` settles.
 */
export class ChannelStream implements AsyncIterable<Buffer> {
  /** Bytes received (stdout and stderr). */
  bytes = 0;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private paused = false;
  private discarding = false;
  private eof = false;
  private isClosed = false;
  private failure: HsError | undefined;
  private wake: (() => void) | undefined;
  private readonly closeWaiters: (() => void)[] = [];
  private stderrText = "";
  private exitStatus: number | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly hwm: number;
  private readonly onAbort: () => void;
  private readonly failed = new AbortController();
  /**
   * Aborted (reason: the typed error) when the command fails or times out:
   * a consumer blocked on something other than read(), e.g. a full pipe to
   * a child process or a file, waits on this too so it cannot outlive the command.
   */
  readonly signal: AbortSignal = this.failed.signal;

  constructor(readonly channel: StreamChannel, private readonly opts: ChannelStreamOptions) {
    this.hwm = opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    const stderrLimit = opts.stderrLimit ?? 4096;
    this.timer = setTimeout(() => this.fail(new CommandTimeoutError(`${opts.label} exceeded ${opts.commandTimeoutMs} ms`, {
      details: { ...opts.details, timeoutMs: opts.commandTimeoutMs, bytes: this.bytes },
    })), opts.commandTimeoutMs);
    this.onAbort = () => this.fail(new CancelledError(`${opts.label} cancelled`, { details: { ...opts.details } }));
    if (opts.signal?.aborted) queueMicrotask(this.onAbort);
    else opts.signal?.addEventListener("abort", this.onAbort, { once: true });
    channel.on("data", (b: Buffer) => {
      this.bytes += b.length;
      if (this.discarding) return;
      this.queue.push(b);
      this.queued += b.length;
      if (!this.paused && this.queued >= this.hwm) {
        this.paused = true;
        channel.pause();
      }
      this.notify();
    });
    channel.stderr.on("data", (b: Buffer) => {
      this.bytes += b.length;
      if (this.stderrText.length < stderrLimit) this.stderrText += b.toString("utf8").slice(0, stderrLimit - this.stderrText.length);
    });
    channel.on("end", () => { this.eof = true; this.notify(); });
    channel.on("exit", (code: number | null) => { this.exitStatus = code ?? 255; });
    // A fast refusal (status, EOF, close in one TCP read) emits 'exit' before
    // exec()'s await hands the channel here; ssh2 keeps what it emitted in _exit.
    const early = (channel as { _exit?: { code?: number | null; signal?: string } })._exit;
    if (early && (early.code !== undefined || early.signal !== undefined)) this.exitStatus = early.code ?? 255;
    channel.on("error", () => {}); // the close that follows ends the stream; the exit status or our failure says why
    // Exit status is judged on 'close', not EOF: exit-status may arrive after EOF.
    channel.on("close", () => {
      this.isClosed = true;
      this.eof = true;
      clearTimeout(this.timer);
      opts.signal?.removeEventListener("abort", this.onAbort);
      this.notify();
      for (const w of this.closeWaiters.splice(0)) w();
    });
  }

  /** Runs `command` on a new exec channel of `conn` and wraps it. */
  static async exec(conn: ChannelOpener, command: string, opts: ChannelStreamOptions): Promise<ChannelStream> {
    return new ChannelStream(await conn.exec(command, opts.signal), opts);
  }

  /** The typed error that ended this command (timeout, cancel, or one a consumer passed to fail()). */
  get error(): HsError | undefined { return this.failure; }
  get stderr(): string { return this.stderrText; }
  /** The remote exit status; undefined until the peer sent one. */
  get exitCode(): number | undefined { return this.exitStatus; }
  get closedNow(): boolean { return this.isClosed; }

  /** Ends the command with `err` (the first failure wins) and tears the channel down. */
  fail(err: HsError): void {
    this.failure ??= err;
    if (!this.failed.signal.aborted) this.failed.abort(this.failure);
    this.teardown();
    this.notify();
  }

  /**
   * ssh2's destroy() only sends EOF and CLOSE; the channel emits 'close'
   * after its readable side has ended, which a paused channel with data
   * buffered never does. So drop what is queued and let the rest flow away.
   */
  private teardown(): void {
    this.discarding = true;
    this.queue.length = 0;
    this.queued = 0;
    this.channel.destroy();
    this.channel.resume();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** The next chunk, undefined at EOF; throws the failure if the command failed. */
  async read(): Promise<Buffer | undefined> {
    for (;;) {
      if (this.failure) throw this.failure;
      const b = this.queue.shift();
      if (b) {
        this.queued -= b.length;
        if (this.paused && this.queued <= this.hwm / 2) {
          this.paused = false;
          this.channel.resume();
        }
        return b;
      }
      if (this.eof) return undefined;
      await new Promise<void>((r) => { this.wake = r; });
    }
  }

  /** Puts bytes a consumer read too far back in front of the stream. */
  unshift(b: Buffer): void {
    if (b.length === 0) return;
    this.queue.unshift(b);
    this.queued += b.length;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    for (let b = await this.read(); b; b = await this.read()) yield b;
  }

  /** Writes to the channel's stdin, waiting while ssh2's outgoing window is full. */
  async write(b: Buffer | Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.isClosed || this.channel.writableEnded) throw new PeerGoneError(`${this.opts.label}: channel closed`, { details: { ...this.opts.details } });
    if (this.channel.write(b)) return;
    await new Promise<void>((resolve) => {
      const done = () => { this.channel.off("drain", done); this.channel.off("close", done); resolve(); };
      this.channel.on("drain", done);
      this.channel.on("close", done);
    });
    if (this.failure) throw this.failure;
  }

  /** Sends EOF on our side (the remote sees stdin end). */
  end(): void {
    if (!this.isClosed && !this.channel.writableEnded) this.channel.end();
  }

  /** Settles once the channel has closed (exit status known, if the peer sent one). */
  closed(): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return new Promise((r) => this.closeWaiters.push(r));
  }

  /**
   * Ends our side and waits for the channel to close; a peer that never
   * answers CLOSE is cut after graceMs so it cannot hold the caller.
   */
  async close(graceMs = 5_000): Promise<void> {
    clearTimeout(this.timer);
    if (this.isClosed) return;
    this.end();
    (this.channel as Duplex & { close?: () => void }).close?.();
    // Unread data must not hold the close (see teardown); a peer that never answers CLOSE is cut.
    this.discarding = true;
    this.channel.resume();
    const t = setTimeout(() => this.teardown(), graceMs);
    await this.closed();
    clearTimeout(t);
  }
}

/**
 * Joins an SSH channel and a local socket both ways (the gRPC tunnel).
 * pipe() carries backpressure each way: a full socket pauses the channel
 * (so ssh2's window stops the peer), a full channel window pauses the
 * socket. Either side ending or failing ends the other.
 */
export function joinChannel(channel: Duplex, sock: Duplex): void {
  channel.on("error", () => sock.destroy());
  sock.on("error", () => channel.destroy());
  channel.pipe(sock).pipe(channel);
  channel.on("close", () => sock.destroy());
  sock.on("close", () => {
    if (channel.destroyed || channel.writableEnded) return;
    // EOF once queued bytes have left (they may wait on the window), then CLOSE.
    channel.once("finish", () => (channel as Duplex & { close?: () => void }).close?.());
    channel.end();
  });
}
