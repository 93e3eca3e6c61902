// Parses the exec string a reader sends (a network boundary): only
// git-upload-pack of an allow-listed repo name passes. Pure: never touches the
// filesystem, so hostile names fail before any path exists.
// Imported by: src/ssh.

import { AccessDeniedError, RepoNotFoundError } from "../domain/errors.js";

export interface ExecCommand {
  readonly service: "git-upload-pack";
  /** Bare repo name, e.g. "site-config" (no quotes, slash or .git). */
  readonly repo: string;
}

const REPO_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAX_COMMAND = 1024;
const MAX_NAME = 64;

export function parseExecCommand(cmd: string): ExecCommand {
  if (typeof cmd !== "string" || cmd.length > MAX_COMMAND) {
    throw new AccessDeniedError("command not allowed");
  }
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
