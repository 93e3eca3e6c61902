// Maps HsErrors to gRPC statuses and back. The HsError code always travels in
// the `hs-code` trailer, so a typed error survives any number of hops intact;
// the gRPC status is only a coarse hint for foreign clients (grpcurl, python).
// Imported by: src/rpc.

import * as grpc from "@grpc/grpc-js";
import { CancelledError, DaemonUnreachableError, DeadlineExceededError, HsError, NotImplementedError, PeerGoneError, RemoteError } from "../domain/errors.js";

export const HS_CODE_KEY = "hs-code";
/** JSON list of an error's secret-free problems (details.errors: e.g. a manifest's file/node/field/message). */
export const HS_ERRORS_KEY = "hs-errors";
const MAX_ERRORS_JSON = 16 * 1024;

const BY_CODE: Readonly<Record<string, grpc.status>> = {
  InvalidArgument: grpc.status.INVALID_ARGUMENT,
  ManifestInvalid: grpc.status.INVALID_ARGUMENT,
  VmidTaken: grpc.status.ALREADY_EXISTS,
  ConfigInvalid: grpc.status.INVALID_ARGUMENT,
  NotFound: grpc.status.NOT_FOUND,
  RepoNotFound: grpc.status.NOT_FOUND,
  LevelNotFound: grpc.status.NOT_FOUND,
  AccessDenied: grpc.status.PERMISSION_DENIED,
  PveAuth: grpc.status.PERMISSION_DENIED,
  ConnectTimeout: grpc.status.DEADLINE_EXCEEDED,
  CommandTimeout: grpc.status.DEADLINE_EXCEEDED,
  PhaseTimeout: grpc.status.DEADLINE_EXCEEDED,
  QueueTimeout: grpc.status.DEADLINE_EXCEEDED,
  DeadlineExceeded: grpc.status.DEADLINE_EXCEEDED,
  Cancelled: grpc.status.CANCELLED,
  NotImplemented: grpc.status.UNIMPLEMENTED,
  DaemonRunning: grpc.status.ALREADY_EXISTS,
  DaemonUnreachable: grpc.status.UNAVAILABLE,
  PeerGone: grpc.status.UNAVAILABLE,
  LevelWentDown: grpc.status.UNAVAILABLE,
  RebootRefused: grpc.status.FAILED_PRECONDITION,
  DirtyWorktree: grpc.status.FAILED_PRECONDITION,
  PreflightFailed: grpc.status.FAILED_PRECONDITION,
  StateCorrupt: grpc.status.DATA_LOSS,
  DiskFull: grpc.status.RESOURCE_EXHAUSTED,
};

export interface WireStatus {
  code: grpc.status;
  details: string;
  metadata: grpc.Metadata;
}

/** The status a handler failure is sent as. Non-HsErrors become Internal without their message (it may hold anything). */
export function toWireStatus(err: unknown): WireStatus {
  const metadata = new grpc.Metadata();
  if (err instanceof HsError) {
    metadata.set(HS_CODE_KEY, err.code);
    if (Array.isArray(err.details.errors)) {
      const json = JSON.stringify(err.details.errors);
      if (json.length <= MAX_ERRORS_JSON) metadata.set(HS_ERRORS_KEY, json);
    }
    return { code: BY_CODE[err.code] ?? grpc.status.UNKNOWN, details: err.message, metadata };
  }
  metadata.set(HS_CODE_KEY, "Internal");
  return { code: grpc.status.INTERNAL, details: "internal error (see the daemon log)", metadata };
}

/**
 * Rebuilds a typed error from a failed call. `gotResponse` tells a broken
 * established call (PeerGone) from one that never reached the server.
 */
export function fromServiceError(err: grpc.ServiceError, target: string, gotResponse = false): HsError {
  const remote = err.metadata?.get(HS_CODE_KEY)[0];
  const details = err.details || err.message;
  if (typeof remote === "string" && remote !== "") {
    const errors = parseErrors(err.metadata.get(HS_ERRORS_KEY)[0]);
    return new RemoteError(remote, details, { details: { target, grpcStatus: err.code, ...(errors ? { errors } : {}) } });
  }
  switch (err.code) {
    case grpc.status.UNAVAILABLE:
      // "Connection dropped": the call was on an established connection that broke (the peer died).
      if (!gotResponse && !/Connection dropped/i.test(details) && /No connection established|connect|ENOENT|ECONNREFUSED/i.test(details)) {
        return new DaemonUnreachableError(`cannot reach ${target}: ${details}`, { details: { target } });
      }
      return new PeerGoneError(`${target} went away: ${details}`, { details: { target } });
    case grpc.status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(`deadline exceeded calling ${target}`, { details: { target } });
    case grpc.status.CANCELLED:
      return new CancelledError(`call to ${target} cancelled`, { details: { target } });
    case grpc.status.UNIMPLEMENTED:
      // A remote hsd of another version that lacks the method.
      return new NotImplementedError(`${target}: ${details}`, { details: { target } });
    default:
      return new RemoteError(RemoteError.code, details, { details: { target, grpcStatus: err.code } });
  }
}

function parseErrors(v: unknown): unknown[] | undefined {
  if (typeof v !== "string") return undefined;
  try {
    const list = JSON.parse(v) as unknown;
    return Array.isArray(list) ? list : undefined;
  } catch {
    return undefined;
  }
}
