// Parses the exec string a reader sends (a network boundary): only
// git-upload-pack of an allow-listed repo name, or hsd-image of an image name
// at a byte offset (or its header alone, or its raw bytes pinned to a sha256),
// passes. Pure: never touches the filesystem, so hostile
// names fail before any path exists.
// Imported by: src/ssh, src/images.

import { AccessDeniedError, ImageNotFoundError, RepoNotFoundError } from "../domain/errors.js";
import { isImageName } from "../config/images-config.js";

export type ExecCommand =
  | {
    readonly service: "git-upload-pack";
    /** Bare repo name, e.g. "site-config" (no quotes, slash or .git). */
    readonly repo: string;
  }
  | {
    readonly service: "hsd-image";
    /** An image name (never a path): what the level's images: lists. */
    readonly image: string;
    /** First byte wanted: a resumed transfer asks for what it does not have yet. */
    readonly offset: number;
    /**
     * "stream": header line, then bytes (the ssh2 reader). "head": the header
     * line only. "raw": bytes only, refused unless the image still hashes to
     * `sha256` (an OpenSSH reader writing stdout straight into its partial file).
     */
    readonly mode: "stream" | "head" | "raw";
    /** For "raw": the sha256 the reader's header named. */
    readonly sha256?: string;
  };

/** The exec line a child sends for an image from `offset` on. */
export function imageCommand(name: string, offset: number): string {
  return `hsd-image ${name} ${offset}`;
}

/** The exec line for an image's header line alone. */
export function imageHeadCommand(name: string): string {
  return `hsd-image --head ${name}`;
}

/** The exec line for an image's bytes from `offset` on, no header, only while it still hashes to `sha256`. */
export function imageRawCommand(name: string, offset: number, sha256: string): string {
  return `hsd-image --raw ${name} ${offset} ${sha256}`;
}

const REPO_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAX_COMMAND = 1024;
const MAX_NAME = 64;

export function parseExecCommand(cmd: string): ExecCommand {
  if (typeof cmd !== "string" || cmd.length > MAX_COMMAND) {
    throw new AccessDeniedError("command not allowed");
  }
  if (cmd.startsWith("hsd-image ")) return parseImageCommand(cmd);
  const m = /^(git-upload-pack|git upload-pack) +(.*)$/s.exec(cmd);
  if (!m) {
    const service = /^(git[- ](?:receive-pack|upload-archive))\b/.exec(cmd)?.[1]?.replace(" ", "-");
    throw new AccessDeniedError(
      service ? `${service} is not allowed: this endpoint is read-only` : "command not allowed: only git-upload-pack",
      { details: service ? { service } : {} },
    );
  }
  let arg = m[2]!.replace(/ +$/, "");
  if (arg.length >= 2 && arg.startsWith("'") && arg.endsWith("'")) arg = arg.slice(1, -1);
  if (arg.startsWith("/")) arg = arg.slice(1);
  if (arg.endsWith(".git")) arg = arg.slice(0, -4);
  if (arg.length === 0 || arg.length > MAX_NAME || !REPO_NAME.test(arg) || arg.includes("..")) {
    // The offending name is not echoed back: it is attacker-chosen text.
    throw new RepoNotFoundError("no such repo");
  }
  return { service: "git-upload-pack", repo: arg };
}

const OFFSET = "(0|[1-9][0-9]{0,15})";
const IMAGE_FORMS: readonly { re: RegExp; mode: "stream" | "head" | "raw" }[] = [
  { re: new RegExp(`^hsd-image ([^ -][^ ]*) ${OFFSET}$`), mode: "stream" },
  { re: /^hsd-image --head ([^ -][^ ]*)$/, mode: "head" },
  { re: new RegExp(`^hsd-image --raw ([^ -][^ ]*) ${OFFSET} ([0-9a-f]{64})$`), mode: "raw" },
];

function parseImageCommand(cmd: string): ExecCommand {
  for (const { re, mode } of IMAGE_FORMS) {
    const m = re.exec(cmd);
    if (!m) continue;
    // The name is not echoed back: it is attacker-chosen text.
    if (!isImageName(m[1]!)) break;
    const offset = mode === "head" ? 0 : Number(m[2]);
    if (!Number.isSafeInteger(offset)) break;
    return { service: "hsd-image", image: m[1]!, offset, mode, ...(mode === "raw" ? { sha256: m[3]! } : {}) };
  }
  throw new ImageNotFoundError("no such image");
}
