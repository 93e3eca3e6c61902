// What an exec handler needs of an ssh2 server channel, and the one way to end
// it so the exit status never overtakes queued data.
// Imported by: src/git, src/ssh, src/images.

import type { Duplex, Writable } from "node:stream";
import type { Logger } from "../log/logger.js";

/** What an exec handler needs of an ssh2 server channel. */
export interface ExecChannel extends Duplex {
  readonly stderr: Writable;
  exit(status: number): void;
}

/**
 * Sends exit-status after every queued byte has left, then EOF and close:
 * ssh2 sends the exit request at once, so calling it while data waits on the
 * window would reorder them.
 */
export function finishChannel(channel: ExecChannel, status: number): void {
  if (channel.destroyed || channel.writableEnded) return;
  channel.write(Buffer.alloc(0), () => {
    try {
      channel.exit(status);
      channel.end();
    } catch {
      // the peer went away; nothing left to tell it
    }
  });
}

/** Serves one reader's upload-pack on a channel; injected into the endpoint by whoever serves git. */
export interface UploadPackServer {
  /** Runs upload-pack for repoPath on the channel; resolves with its exit status. */
  serve(o: { repoPath: string; channel: ExecChannel; timeoutS: number; log: Logger; signal?: AbortSignal }): Promise<number>;
  /** The protocol's error line for a refused request (git shows it as "remote error: <msg>"). */
  errorLine(message: string): Buffer;
}

/** Serves one reader's image transfer (src/images/image-server.ts); injected so ssh never imports images. */
export interface ImageServer {
  /**
   * Streams image `name` from byte `offset` on the channel (a header line,
   * then the bytes); resolves with the exit status. Throws a typed error
   * (ImageNotFound, ImageChecksumMismatch) before any byte is sent. Mode
   * "head" sends the header line alone; "raw" the bytes alone, refused unless
   * the image still hashes to `sha256`.
   */
  serve(o: {
    name: string; offset: number; mode?: "stream" | "head" | "raw"; sha256?: string; channel: ExecChannel; log: Logger; signal: AbortSignal;
  }): Promise<number>;
}
