// The typed error for an image request the parent refused: its exit status and
// the `[Code]` its stderr ends with, read the same whether the bytes came over
// ssh2 or through the OpenSSH client.
// Imported by: src/images.

import {
  CancelledError, CommandTimeoutError, type HsError, ImageChecksumMismatchError, ImageNotFoundError, ImageTransferError, QueueTimeoutError,
} from "../domain/errors.js";

const REMOTE_CODES: Record<string, new (m: string, o?: { details?: Record<string, unknown> }) => HsError> = {
  ImageNotFound: ImageNotFoundError,
  ImageChecksumMismatch: ImageChecksumMismatchError,
  QueueTimeout: QueueTimeoutError,
  Cancelled: CancelledError,
  CommandTimeout: CommandTimeoutError,
};

export function remoteRefusal(stderr: string, exitCode: number, name: string): HsError {
  const code = /\[([A-Za-z]+)\]\s*$/.exec(stderr)?.[1];
  const Cls = code ? REMOTE_CODES[code] : undefined;
  const message = `parent: ${stderr.replace(/^hsd: /, "").replace(/\s*\[[A-Za-z]+\]\s*$/, "").trim() || `image ${name} failed`}`;
  return new (Cls ?? ImageTransferError)(message, { details: { image: name, exitCode } });
}
