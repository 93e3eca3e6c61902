// Sits between the SSH channel and the fetch's reader (fetch-pack.ts, or
// isomorphic-git's fetch) on an upload-pack response: a large pack is
// streamed into `git index-pack --stdin` (native SHA-1 and zlib, its own
// process) and the reader is handed a valid empty pack in its place, so it
// parses ACKs/progress and updates refs but never indexes in JS.
//
// Why: profiling a full sync of the demo set showed isomorphic-git's
// GitPackIndex.fromPack (webcrypto SHA-1 per object, pako inflate, the idx
// fanout loop) as the bulk of the fetch CPU, ~1-2 s per level for iac-driver
// alone, on the event loop, after every byte had arrived. isomorphic-git has
// no public hook to replace its indexer (its hash and inflate are internal),
// but its `http` plugin is public and the response is ours to produce: a
// response whose pack has zero objects is valid protocol, and isomorphic-git
// then writes no pack (and would write a harmless empty one if a later
// version did). Everything else isomorphic-git does is unchanged.
// A new level's empty working tree is then checked out by the same process
// (IndexPack's sh wrapper), and a first fetch's index-pack is started before
// the response: each fork of the daemon blocks its event loop for a few ms.
// Imported by: src/git.

import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log/logger.js";
import { GitProtocolError } from "../domain/errors.js";
import { LOCAL_GIT_TIMEOUT_MS, localGitTimeout, plainGitEnv, worktreeGitEnv } from "./run-git.js";
import { FLUSH_PKT, PktStreamReader, encodePktLine } from "./pkt-line.js";

/**
 * Packs with fewer objects stay with isomorphic-git: a spawn costs more than
 * indexing a handful of objects in JS (an incremental sync's one-commit pack
 * is ~5-20 objects). Same role and value as git's own fetch.unpackLimit.
 */
export const DIVERT_MIN_OBJECTS = 100;

/**
 * isomorphic-git holds a whole pack in memory, so a pack with few objects but
 * more bytes than this goes to index-pack too: what is held while deciding,
 * and all isomorphic-git ever gets, stays under this bound.
 */
export const PASS_MAX_BYTES = 1 << 20;

const PACK_HEADER_LEN = 12;

/** "PACK", version 2, zero objects, then the SHA-1 of those 12 bytes: what git sends for an empty fetch. */
export const EMPTY_PACK: Buffer = (() => {
  const head = Buffer.from([0x50, 0x41, 0x43, 0x4b, 0, 0, 0, 2, 0, 0, 0, 0]);
  return Buffer.concat([head, createHash("sha1").update(head).digest()]);
})();

export interface DivertPackOptions {
  /** The bare repo the pack is indexed into (objects/pack). */
  gitdir: string;
  repo: string;
  log: Logger;
  minObjects?: number;
  /** Largest pack handed to isomorphic-git; default PASS_MAX_BYTES. */
  passMaxBytes?: number;
  onProgress?: (ev: { phase: string; loaded: number; total: number }) => void;
  /** The fetch's failure (ChannelStream.signal): a write blocked on a stalled index-pack gives up with its reason. */
  signal?: AbortSignal;
  /** A new, empty working tree whose first checkout the index-pack process may run afterwards (stats.readTree). */
  checkoutInto?: string;
  /**
   * An index-pack started before the response (a first fetch into an empty
   * export, whose pack is the whole history): any pack goes to it, whatever
   * its size. Not fed (no pack came): the caller aborts it.
   */
  indexPack?: IndexPack;
}

/**
 * readTree: set once a diverted pack is indexed with `checkoutInto`; whoever
 * holds the stats must run or release it (its process waits until then).
 */
export interface DivertStats { diverted: boolean; objects: number; packSha?: string; readTree?: PendingReadTree }

/**
 * Transforms the raw upload-pack response (pkt-lines: ACK/NAK, then
 * side-band: 1 = pack, 2 = progress, 3 = error). Non-pack packets pass
 * through untouched; side-band 1 goes to index-pack once the pack header
 * shows at least `minObjects` objects or the pack outgrows `passMaxBytes`,
 * else the (small) response goes to isomorphic-git as it was. Packets are
 * pulled one at a time and written to index-pack with backpressure, so the
 * source is read only as fast as index-pack takes it. The generator ends
 * only after index-pack has exited 0, so isomorphic-git (and the ref updates
 * after it) never see the end of the pack before its objects are in the store.
 */
export async function* divertPack(source: AsyncIterable<Buffer>, opts: DivertPackOptions, stats: DivertStats): AsyncGenerator<Buffer> {
  const minObjects = opts.minObjects ?? DIVERT_MIN_OBJECTS;
  const passMax = opts.passMaxBytes ?? PASS_MAX_BYTES;
  const it = source[Symbol.asyncIterator]();
  const reader = new PktStreamReader(async () => {
    const r = await it.next();
    return r.done ? undefined : r.value;
  });
  // Raw packets held from the first pack packet until the mode is decided (bounded by passMax).
  let held: Buffer[] = [];
  let heldBytes = 0;
  let packBytes = 0;
  let mode: "undecided" | "divert" = "undecided";
  let child: IndexPack | undefined;
  let heldFlush = 0;
  try {
    for (;;) {
      const r = await reader.read(); // a truncated or malformed response throws GitProtocolError
      if (!r) break;
      const { pkt, raw } = r;
      const isPack = pkt.type === "data" && pkt.payload[0] === 1;
      if (mode === "divert") {
        if (isPack) { await child!.write(pkt.payload.subarray(1)); continue; }
        if (pkt.type === "flush") { heldFlush++; continue; } // re-sent after the empty pack
        if (pkt.type === "data" && pkt.payload[0] === 3) await child!.abort(); // isomorphic-git raises it
        yield raw;
        continue;
      }
      if (!isPack) {
        if (held.length > 0) { held.push(raw); heldBytes += raw.length; } else yield raw;
        continue;
      }
      if (packBytes < PACK_HEADER_LEN && packBytes + pkt.payload.length - 1 >= PACK_HEADER_LEN) {
        const head = Buffer.concat([...held.filter((h) => h[4] === 1).map((h) => h.subarray(5)), pkt.payload.subarray(1)]).subarray(0, PACK_HEADER_LEN);
        if (head.subarray(0, 4).toString("latin1") !== "PACK") throw new GitProtocolError("upload-pack sent something other than a pack", { details: { repo: opts.repo } });
        stats.objects = head.readUInt32BE(8);
      }
      held.push(raw);
      heldBytes += raw.length;
      packBytes += pkt.payload.length - 1;
      if (packBytes < PACK_HEADER_LEN) continue;
      if (!opts.indexPack && stats.objects < minObjects && heldBytes <= passMax) continue;
      mode = "divert";
      stats.diverted = true;
      opts.onProgress?.({ phase: "Indexing objects", loaded: 0, total: stats.objects });
      child = opts.indexPack ?? new IndexPack(opts.gitdir, opts.checkoutInto);
      child.bind(opts.signal);
      // Progress packets that arrived between pack packets go on to isomorphic-git now.
      for (const h of held) {
        if (h[4] === 1) await child.write(h.subarray(5));
        else if (h.length === 4 && h.toString("latin1") === "0000") heldFlush++;
        else yield h;
      }
      held = [];
      heldBytes = 0;
    }
    if (mode === "undecided" && held.length > 0) yield Buffer.concat(held); // small: isomorphic-git indexes it
    if (child) {
      stats.packSha = await child.finish(opts.repo);
      stats.readTree = child.pending();
      opts.onProgress?.({ phase: "Indexing objects", loaded: stats.objects, total: stats.objects });
      opts.log.trace({ repo: opts.repo, objects: stats.objects, pack: stats.packSha }, "pack indexed by git index-pack");
      yield Buffer.concat([encodePktLine(Buffer.concat([Buffer.from([1]), EMPTY_PACK])), ...Array.from({ length: Math.max(heldFlush, 1) }, () => FLUSH_PKT)]);
    }
  } finally {
    if (child && !child.done) await child.abort();
    await it.return?.();
  }
}

/**
 * The working tree's first checkout, left to the process that indexed its
 * pack (see IndexPack): one fork of the daemon per repo instead of two.
 */
export interface PendingReadTree {
  /** `git read-tree -m -u <commit>` in the worktree, by the waiting process; its exit code and stderr. */
  run(commit: string): Promise<{ code: number; stderr: string }>;
  /** Lets the process exit without touching the worktree (idempotent; a no-op once run). */
  release(): void;
}

/**
 * With a worktree to check out: index-pack runs under a small sh that, once
 * the pack is in the store, prints a marker and waits on fd 3 for the commit
 * to check out (or for fd 3 to close: nothing to do). The checkout is asked
 * for only after the fetch has finished and its refs are written, so the
 * order of a sync is unchanged. index-pack runs as sh's job so its pid is
 * known: a stopped one is killed by pid (sh's death would not reach it);
 * its stdin is the saved fd 4, since an asynchronous list's stdin is /dev/null.
 */
const INDEX_THEN_CHECKOUT = [
  "exec 4<&0",
  "git index-pack --stdin <&4 4<&- 3<&- &",
  "echo \"hsd-pid $!\"",
  "exec 4<&-",
  "wait $! || exit $?",
  "echo hsd-indexed",
  "IFS= read -r commit <&3 || exit 0",
  "[ -n \"$commit\" ] || exit 0",
  "unset GIT_DIR",
  "cd \"$1\" && exec git read-tree -m -u \"$commit\"",
].join("\n");

/** One `git index-pack --stdin` writing into a bare repo's objects/pack (then, if asked, the worktree's first checkout). */
export class IndexPack {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly exited: Promise<number>;
  private readonly indexed: Promise<boolean> | undefined;
  private readonly control: import("node:stream").Writable | undefined;
  private indexPackPid: number | undefined;
  private stdout = "";
  private stderr = "";
  done = false;

  private signal: AbortSignal | undefined;

  /**
   * timeoutMs bounds each wait on the process once it has its input: index-pack
   * after the pack's last byte (finish), read-tree after its commit (pending().run).
   * Past it the process is killed and the wait rejects with CommandTimeout.
   */
  constructor(private readonly gitdir: string, checkoutInto?: string, private readonly timeoutMs = LOCAL_GIT_TIMEOUT_MS) {
    const env = plainGitEnv({ GIT_DIR: gitdir, GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1", ...(checkoutInto ? worktreeGitEnv(checkoutInto) : {}) });
    // No --fix-thin: isomorphic-git never asks for a thin pack, so one would be a protocol error.
    this.proc = (checkoutInto
      ? spawn("sh", ["-c", INDEX_THEN_CHECKOUT, "hsd-index-pack", checkoutInto], { env, stdio: ["pipe", "pipe", "pipe", "pipe"] })
      : spawn("git", ["index-pack", "--stdin"], { env, stdio: ["pipe", "pipe", "pipe"] })) as ChildProcessWithoutNullStreams;
    let marked: ((ok: boolean) => void) | undefined;
    if (checkoutInto) {
      this.indexed = new Promise((resolve) => { marked = resolve; });
      this.control = this.proc.stdio[3] as import("node:stream").Writable;
      this.control.on("error", () => {}); // sh gone: its exit code says why
    }
    this.proc.stdout.on("data", (b: Buffer) => {
      this.stdout += b.toString("utf8");
      if (checkoutInto) {
        this.indexPackPid ??= Number(/^hsd-pid (\d+)$/m.exec(this.stdout)?.[1]) || undefined;
        if (/^hsd-indexed$/m.test(this.stdout)) marked?.(true);
      }
    });
    this.proc.stderr.on("data", (b: Buffer) => { if (this.stderr.length < 4096) this.stderr += b.toString("utf8"); });
    this.proc.stdin.on("error", () => {}); // it may exit early on a bad pack; the exit code says why
    this.exited = new Promise((resolve) => {
      this.proc.on("error", () => resolve(-1));
      this.proc.on("close", (code) => resolve(code ?? 128));
    });
    void this.exited.then(() => marked?.(false));
  }

  /** The fetch's failure signal: a write blocked on a stalled index-pack gives up with its reason. */
  bind(signal: AbortSignal | undefined): void {
    this.signal = signal;
  }

  /** Writes pack bytes, waiting when the pipe is full (memory stays bounded by the pipe, not the pack). */
  async write(b: Buffer): Promise<void> {
    if (this.signal?.aborted) throw this.signal.reason;
    if (this.proc.stdin.destroyed || this.proc.stdin.writableEnded) return;
    if (this.proc.stdin.write(b)) return;
    const stdin = this.proc.stdin;
    const signal = this.signal;
    await new Promise<void>((resolve) => {
      const done = () => { stdin.off("drain", done); stdin.off("close", done); signal?.removeEventListener("abort", done); resolve(); };
      stdin.on("drain", done);
      stdin.on("close", done);
      signal?.addEventListener("abort", done, { once: true });
    });
    if (signal?.aborted) throw signal.reason;
  }

  /** Ends the pack; returns its SHA-1 once index-pack has written .pack and .idx. */
  async finish(repo: string): Promise<string> {
    this.proc.stdin.end();
    let code: number;
    try {
      code = await this.bounded(this.indexed ? this.indexed.then((ok) => (ok ? 0 : this.exited)) : this.exited, "index-pack");
    } catch (err) {
      this.done = true;
      await this.removeTemp();
      throw err;
    }
    this.done = true;
    const sha = /^(?:pack\t)?([0-9a-f]{40})\s*$/m.exec(this.stdout)?.[1];
    if (code !== 0 || !sha) {
      this.release();
      await this.removeTemp();
      throw new GitProtocolError(`git index-pack rejected the pack for ${repo} (exit ${code}): ${this.stderr.trim().split("\n").slice(-1)[0]?.slice(0, 200) ?? ""}`, {
        details: { repo, exitCode: code },
      });
    }
    return sha;
  }

  /** Stops a half-fed index-pack and removes its temporary files (nothing half-written stays in objects/pack). */
  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.proc.stdin.destroy();
    this.release();
    this.kill(); // its temp files go below
    await this.exited;
    await this.removeTemp();
  }

  /** The worktree checkout this process waits to run, once finish() has succeeded with a worktree to check out. */
  pending(): PendingReadTree | undefined {
    const control = this.control;
    if (!control) return undefined;
    let used = false;
    return {
      run: async (commit) => {
        if (used || !/^[0-9a-f]{40}$/.test(commit)) throw new GitProtocolError("worktree checkout asked twice or for no commit", { details: { commit } });
        used = true;
        control.end(`${commit}\n`);
        const code = await this.bounded(this.exited, "read-tree");
        return { code, stderr: this.stderr };
      },
      release: () => { if (!used) { used = true; this.release(); } },
    };
  }

  /**
   * Waits for p (which settles once the process has exited) at most timeoutMs;
   * past that, kills the process and its index-pack, and rejects with
   * CommandTimeout once they are gone, so no caller sees one still running.
   */
  private async bounded<T>(p: Promise<T>, what: string): Promise<T> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.release();
      this.kill();
    }, this.timeoutMs);
    try {
      const v = await p;
      if (timedOut) throw localGitTimeout(what, this.timeoutMs);
      return v;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL to the process and its index-pack: a stopped or wedged index-pack ignores SIGTERM until resumed. */
  private kill(): void {
    if (this.indexPackPid) { try { process.kill(this.indexPackPid, "SIGKILL"); } catch { /* gone already */ } }
    this.proc.kill("SIGKILL");
  }

  private release(): void {
    if (this.control && !this.control.writableEnded) this.control.end();
  }

  private async removeTemp(): Promise<void> {
    // index-pack writes tmp_pack_*/tmp_idx_* and renames them only on success;
    // one fetch per export runs at a time, so any temp file here is ours.
    const dir = join(this.gitdir, "objects", "pack");
    const names = await readdir(dir).catch(() => [] as string[]);
    await Promise.all(names.filter((n) => n.startsWith("tmp_")).map((n) => rm(join(dir, n), { force: true })));
  }
}
