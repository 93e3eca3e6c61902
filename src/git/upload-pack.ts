// Serves one fetch: the system `git upload-pack` on an export, piped to an SSH
// exec channel. Protocol v0 only, refs/heads and refs/tags only, clean env. The
// SSH endpoint gets it injected as gitUploadPack (see src/daemon wiring).
// Imported by: src/daemon.

import { spawn } from "node:child_process";
import type { Logger } from "../log/logger.js";
import { finishChannel, type ExecChannel, type UploadPackServer } from "../ssh/exec-channel.js";
import { encodePktLine } from "./pkt-line.js";

export interface UploadPackOptions {
  repoPath: string;
  channel: ExecChannel;
  /** git upload-pack --timeout: seconds of client inactivity. */
  timeoutS: number;
  log: Logger;
  signal?: AbortSignal;
}

/**
 * Config forced on every upload-pack. Hiding everything but heads and tags
 * keeps storage refs private; the want-policy knobs are spelled out so no repo
 * config can widen what a reader may ask for.
 */
export const UPLOAD_PACK_CONFIG = [
  "uploadpack.hideRefs=refs/",
  "uploadpack.hideRefs=!refs/heads/",
  "uploadpack.hideRefs=!refs/tags/",
  "uploadpack.allowTipSHA1InWant=false",
  "uploadpack.allowReachableSHA1InWant=false",
  "uploadpack.allowAnySHA1InWant=false",
  "uploadpack.allowFilter=false",
  "uploadpack.allowRefInWant=false",
];

/**
 * The child's environment: PATH only plus isolation from system/user config.
 * GIT_PROTOCOL is deliberately absent whatever the client asked for: under v2
 * upload-pack serves any object reachable by hash, hidden refs included.
 */
export function uploadPackEnv(): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: "/nonexistent",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    LC_ALL: "C",
  };
}

/** Runs upload-pack until it exits; sends the exit status and closes the channel. Resolves with the status. */
export function uploadPack(opts: UploadPackOptions): Promise<number> {
  const { channel, log } = opts;
  const args: string[] = [];
  for (const c of UPLOAD_PACK_CONFIG) args.push("-c", c);
  args.push("upload-pack", "--strict", `--timeout=${Math.max(1, Math.floor(opts.timeoutS))}`, opts.repoPath);
  return new Promise((resolve) => {
    const child = spawn("git", args, { env: uploadPackEnv(), stdio: ["pipe", "pipe", "pipe"] });
    let done = false;
    const kill = () => { if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL"); };
    const onChannelClose = () => { if (!done) { log.debug("channel closed before upload-pack exited; killing it"); kill(); } };
    channel.once("close", onChannelClose);
    const onAbort = () => kill();
    opts.signal?.addEventListener("abort", onAbort, { once: true });

    channel.pipe(child.stdin);
    child.stdin.on("error", () => {}); // EPIPE when upload-pack exits first
    child.stdout.pipe(channel, { end: false });
    child.stderr.pipe(channel.stderr, { end: false });
    child.on("error", (err) => log.warn({ err }, "upload-pack could not run"));
    child.on("close", (code, sig) => {
      done = true;
      channel.unpipe(child.stdin);
      channel.removeListener("close", onChannelClose);
      opts.signal?.removeEventListener("abort", onAbort);
      const status = code ?? (sig ? 128 + 9 : 128);
      finishChannel(channel, status);
      resolve(status);
    });
  });
}

/** The endpoint's upload-pack service: git itself, errors as an ERR pkt-line. */
export const gitUploadPack: UploadPackServer = {
  serve: uploadPack,
  errorLine: (message) => encodePktLine(`ERR ${message}\n`),
};
