// Typed errors for every hsd subsystem. Each error class carries a stable
// `code` from the closed ErrorCode union (tests and machines match on it, never
// on message text); its hint lives next door in hints.ts. Messages never
// contain secret values: callers pass names, not contents.
// Imported by: anyone.

/** Every code an hsd error can carry; each has a hint in hints.ts. Codes are API. */
export type ErrorCode =
  | "Internal"
  | "InvalidArgument"
  | "ConfigInvalid"
  | "DaemonRunning"
  | "DaemonUnreachable"
  | "DaemonStartFailed"
  | "RepoNotFound"
  | "SecretInRepo"
  | "AccessDenied"
  | "HostKeyMismatch"
  | "ConnectTimeout"
  | "CommandTimeout"
  | "PhaseTimeout"
  | "PeerGone"
  | "QueueTimeout"
  | "GitProtocol"
  | "DirtyWorktree"
  | "ProviderFailed"
  | "PveApi"
  | "PveAuth"
  | "PreflightFailed"
  | "Cancelled"
  | "NotImplemented"
  | "StateCorrupt"
  | "DiskFull"
  | "AddressInUse"
  | "DeadlineExceeded"
  | "Remote"
  | "NotFound"
  | "PveFingerprintMismatch"
  | "PveNotPinned"
  | "PveProxy"
  | "PveUnreachable"
  | "PveTaskFailed"
  | "CommandFailed"
  | "Netns"
  | "PveTokenExists"
  | "SecretsEncrypted"
  | "StepFailed"
  | "ImageNotFound"
  | "ImageChecksumMismatch"
  | "ImageTransfer"

  | "ManifestInvalid"
  | "VmidTaken"
  | "LevelNotFound"
  | "HostKeyUnknown"
  | "NotController"
  | "CloudInit"
  | "AptLocked"
  | "LevelWentDown"
  | "RebootRefused";

export interface HsErrorOptions {
  /** Structured, secret-free context (repo name, level path, phase, file:line). */
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class HsError extends Error {
  static code: ErrorCode = "Internal";
  readonly details: Record<string, unknown>;

  constructor(message: string, opts: HsErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.details = opts.details ?? {};
  }

  /** Stable machine-readable code, e.g. "RepoNotFound". */
  get code(): string {
    return (this.constructor as typeof HsError).code;
  }
}

/** A value that crossed a boundary (gRPC, CLI, SSH, YAML) was not acceptable. */
export class InvalidArgumentError extends HsError { static override code = "InvalidArgument" as const; }
export class ConfigError extends HsError { static override code = "ConfigInvalid" as const; }
export class DaemonRunningError extends HsError { static override code = "DaemonRunning" as const; }
export class DaemonUnreachableError extends HsError { static override code = "DaemonUnreachable" as const; }
export class RepoNotFoundError extends HsError { static override code = "RepoNotFound" as const; }
export class SecretInRepoError extends HsError { static override code = "SecretInRepo" as const; }
export class AccessDeniedError extends HsError { static override code = "AccessDenied" as const; }
export class HostKeyMismatchError extends HsError { static override code = "HostKeyMismatch" as const; }
export class ConnectTimeoutError extends HsError { static override code = "ConnectTimeout" as const; }
export class CommandTimeoutError extends HsError { static override code = "CommandTimeout" as const; }
export class PhaseTimeoutError extends HsError { static override code = "PhaseTimeout" as const; }
export class PeerGoneError extends HsError { static override code = "PeerGone" as const; }
export class QueueTimeoutError extends HsError { static override code = "QueueTimeout" as const; }
export class GitProtocolError extends HsError { static override code = "GitProtocol" as const; }
export class DirtyWorktreeError extends HsError { static override code = "DirtyWorktree" as const; }
export class ProviderError extends HsError { static override code = "ProviderFailed" as const; }
export class PveApiError extends HsError { static override code = "PveApi" as const; }
export class PveAuthError extends HsError { static override code = "PveAuth" as const; }
export class PreflightError extends HsError { static override code = "PreflightFailed" as const; }
export class CancelledError extends HsError { static override code = "Cancelled" as const; }
export class NotImplementedError extends HsError { static override code = "NotImplemented" as const; }
export class StateCorruptError extends HsError { static override code = "StateCorrupt" as const; }
export class DiskFullError extends HsError { static override code = "DiskFull" as const; }

/** A listening address (SSH endpoint port) is taken. */
export class AddressInUseError extends HsError { static override code = "AddressInUse" as const; }

/** The code of any thrown value: HsError's own, or "Internal". */
export function errorCode(err: unknown): string {
  return err instanceof HsError ? err.code : "Internal";
}

// --- appended by the Foundation (rpc/api/daemon) work ---
/** A gRPC deadline passed before the remote answered (no more specific code was sent). */
export class DeadlineExceededError extends HsError { static override code = "DeadlineExceeded" as const; }
/** The remote side failed an RPC without an hs-code (or with a code unknown here). */
export class RemoteError extends HsError {
  static override code = "Remote" as const;
  /** The code the remote side sent in its `hs-code` trailer, kept verbatim. */
  readonly remoteCode: string;
  constructor(remoteCode: string, message: string, opts: HsErrorOptions = {}) {
    super(message, opts);
    this.remoteCode = remoteCode;
  }
  override get code(): string {
    return this.remoteCode;
  }
}
/** A request named something this level does not have (key, level...). */
export class NotFoundError extends HsError { static override code = "NotFound" as const; }

// --- appended by the pve provider work ---
/** The PVE API certificate's fingerprint is not the pinned one (details: expected, actual). */
export class PveFingerprintMismatchError extends HsError { static override code = "PveFingerprintMismatch" as const; }
/** No PVE certificate fingerprint is configured; hsd refuses to talk TLS unpinned. */
export class PveNotPinnedError extends HsError { static override code = "PveNotPinned" as const; }
/** pveproxy's own proxy failure (595/596/597), e.g. a synchronous call over its 30 s limit. */
export class PveProxyError extends HsError { static override code = "PveProxy" as const; }
/** The PVE API could not be reached (refused, reset, TLS failure). */
export class PveUnreachableError extends HsError { static override code = "PveUnreachable" as const; }
/** A PVE task (UPID) ended with an exitstatus other than OK / WARNINGS: n. */
export class PveTaskError extends HsError { static override code = "PveTaskFailed" as const; }
/** A spawned command exited non-zero (or could not be spawned) and the caller asked for `check`. */
export class CommandFailedError extends HsError { static override code = "CommandFailed" as const; }
/** Creating, reshaping or removing a level's network namespace failed. */
export class NetnsError extends HsError { static override code = "Netns" as const; }
/** A PVE API token with hsd's id already exists but this level does not hold its secret (recreating it would invalidate it). */
export class PveTokenExistsError extends HsError { static override code = "PveTokenExists" as const; }

// --- homestak levels (issue 12) ---
/** Only config/secrets.yaml.enc exists and hsd cannot decrypt it (no age key / no sops support). */
export class SecretsEncryptedError extends HsError { static override code = "SecretsEncrypted" as const; }
/** A configure step exited non-zero (details: level, step, exitCode, lastLines). */
export class StepFailedError extends HsError { static override code = "StepFailed" as const; }
// --- appended by issue 20 (say why hsd cannot start) ---
/**
 * A daemon hsctl started exited, or did not become ready in time. `code` is
 * the daemon's own when it reported one (AddressInUse, ConfigInvalid, ...);
 * details.hint is its hint plus where its log is.
 */
export class DaemonStartError extends HsError {
  static override code = "DaemonStartFailed" as const;
  readonly reportedCode: string | undefined;
  constructor(message: string, opts: HsErrorOptions & { reportedCode?: string } = {}) {
    super(message, opts);
    this.reportedCode = opts.reportedCode;
  }
  override get code(): string {
    return this.reportedCode ?? DaemonStartError.code;
  }
}
// --- images (issue 13) ---
/** A reader asked for an image name the level does not serve, or a configured image file is missing. */
export class ImageNotFoundError extends HsError { static override code = "ImageNotFound" as const; }
/** The bytes received (or found) do not hash to the image's sha256 (details: image, expected, actual). */
export class ImageChecksumMismatchError extends HsError { static override code = "ImageChecksumMismatch" as const; }
/** The parent's image stream broke its framing or ended short (details: image, bytes, size). */
export class ImageTransferError extends HsError { static override code = "ImageTransfer" as const; }
// --- homestak manifests (issue 14) ---
/**
 * A manifest failed validation. details.errors lists every problem at once,
 * each {file, node, field, message}; nothing was created.
 */
export class ManifestInvalidError extends HsError { static override code = "ManifestInvalid" as const; }
/** A manifest's fixed vmid is already a VM on the node: never silently renumbered. */
export class VmidTakenError extends HsError { static override code = "VmidTaken" as const; }

// --- appended by issue 15 (operator reach) ---
/** A --level path names no level of this tree (details: levelPath, at, known). */
export class LevelNotFoundError extends HsError { static override code = "LevelNotFound" as const; }
/** The remote endpoint's host key is not in known_hosts (details: host, port, fingerprint, hint). */
export class HostKeyUnknownError extends HsError { static override code = "HostKeyUnknown" as const; }
/** The remote endpoint accepted the operator's key, but not as a controller (no API tunnel). */
export class NotControllerError extends HsError { static override code = "NotController" as const; }

// --- issue 18 (real guests) ---
/** A child VM's cloud-init ended in `error`, or was still running when its wait ran out (details: state, waitedMs). */
export class CloudInitError extends HsError { static override code = "CloudInit" as const; }
/** apt/dpkg on a child VM stayed locked past the install's lock budget (details: holders, waitedMs). */
/** A level's machine went down (rebooted or powered off) while a call was under way outside a configure step. */
export class LevelWentDownError extends HsError { static override code = "LevelWentDown" as const; }
/** A configure step asked for a reboot that would stop this level's children. */
export class RebootRefusedError extends HsError { static override code = "RebootRefused" as const; }
export class AptLockedError extends HsError { static override code = "AptLocked" as const; }
