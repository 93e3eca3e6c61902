// Serves a level's images to its children on the SSH endpoint (hsd-image):
// a header line with the image's size and sha256, then the file's bytes from
// the offset asked for, streamed with the channel's backpressure (never more
// than one read chunk held). Only names under images: are served. An OpenSSH
// reader asks for the header alone, then the raw bytes pinned to its sha256.
// Imported by: src/daemon, src/images.

import { createReadStream } from "node:fs";
import type { ImageEntry } from "../config/config.js";
import { ImageChecksumMismatchError, ImageNotFoundError, PeerGoneError } from "../domain/errors.js";
import { finishChannel, type ExecChannel, type ImageServer } from "../ssh/exec-channel.js";
import type { ImageDigests } from "./image-digest.js";

/** First line of every image stream: `HSDIMG1 <size> <sha256>\n`. */
export const IMAGE_HEADER = "HSDIMG1";
// 1 MiB reads: a quarter of the stream chunks and channel writes of 256 KiB (measured: ~10% less CPU per GiB served).
const READ_CHUNK = 1024 * 1024;

export function imageHeader(size: number, sha256: string): string {
  return `${IMAGE_HEADER} ${size} ${sha256}\n`;
}

export interface ImageServerOptions {
  /** The level's images (config.images.entries). */
  readonly entries: Readonly<Record<string, ImageEntry>>;
  readonly digests: ImageDigests;
}

export function imageServer(o: ImageServerOptions): ImageServer {
  return {
    async serve({ name, offset, mode = "stream", sha256, channel, log, signal }) {
      const entry = Object.hasOwn(o.entries, name) ? o.entries[name] : undefined;
      if (!entry) throw new ImageNotFoundError("no such image");
      const digest = await o.digests.digest(entry.path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT" || err.code === "EACCES" || err.code === "EISDIR") {
          throw new ImageNotFoundError(`image ${name} is configured but its file cannot be read (${err.code})`, { details: { image: name } });
        }
        throw err;
      });
      if (entry.sha256 && entry.sha256 !== digest.sha256) {
        // Never serve bytes the operator's config says are not this image.
        throw new ImageChecksumMismatchError(`image ${name} does not match its configured sha256`, {
          details: { image: name, expected: entry.sha256, actual: digest.sha256 },
        });
      }
      if (mode === "raw" && sha256 !== digest.sha256) {
        // The image changed since the reader's header: its partial would mix two versions.
        throw new ImageChecksumMismatchError(`image ${name} changed since its header was read`, {
          details: { image: name, expected: sha256, actual: digest.sha256 },
        });
      }
      // Nothing is read from a reader's stdin; but a channel whose readable side
      // never ends never emits 'close', and a reader that went away would hold its slot.
      channel.resume();
      const start = Math.min(offset, digest.size);
      if (mode !== "raw") await write(channel, Buffer.from(imageHeader(digest.size, digest.sha256)), signal);
      if (mode !== "head" && start < digest.size) {
        const file = createReadStream(entry.path, { start, end: digest.size - 1, highWaterMark: READ_CHUNK, signal });
        for await (const chunk of file) await write(channel, chunk as Buffer, signal);
      }
      log.debug({ mode, offset: start, bytes: mode === "head" ? 0 : digest.size - start }, "image sent");
      finishChannel(channel, 0);
      return 0;
    },
  };
}

/** One write, waiting for the channel's window when ssh2 says it is full; a closed channel ends the transfer. */
async function write(channel: ExecChannel, b: Buffer, signal: AbortSignal): Promise<void> {
  const gone = () => channel.destroyed || channel.writableEnded || signal.aborted;
  if (gone()) throw new PeerGoneError("the reader went away mid-image");
  if (channel.write(b)) return;
  await new Promise<void>((resolve) => {
    const done = () => { channel.off("drain", done); channel.off("close", done); signal.removeEventListener("abort", done); resolve(); };
    channel.on("drain", done);
    channel.on("close", done);
    signal.addEventListener("abort", done, { once: true });
  });
  if (gone()) throw new PeerGoneError("the reader went away mid-image");
}
