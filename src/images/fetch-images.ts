// A level's sync step for images: every image its parent passed down, fetched
// one after another over the level's one SSH connection (the parent caps and
// queues transfers; one at a time here keeps the disk writing sequentially).
// Imported by: src/level.

import { join } from "node:path";
import type { HsdConfig } from "../config/config.js";
import { fetchImage, type FetchImageOptions, type FetchImageResult, type ImageProgress } from "./fetch-image.js";

/** One image's options, less what each configured entry supplies itself. */
export interface FetchImagesOptions extends Pick<FetchImageOptions, "conn" | "digests" | "log" | "now" | "signal" | "onProgress" | "openssh"> {
  readonly config: HsdConfig;
}

export async function fetchImages(o: FetchImagesOptions): Promise<Record<string, FetchImageResult>> {
  const out: Record<string, FetchImageResult> = {};
  for (const [name, entry] of Object.entries(o.config.images.entries)) {
    out[name] = await fetchImage({
      conn: o.conn, name, dest: entry.path || join(o.config.images.dir, `${name}.img`), expectedSha256: entry.sha256,
      ...(entry.size ? { expectedSize: entry.size } : {}),
      digests: o.digests, commandTimeoutMs: o.config.budgets.sync, log: o.log, now: o.now, signal: o.signal,
      onProgress: o.onProgress, ...(o.openssh ? { openssh: o.openssh } : {}),
    });
  }
  return out;
}

/** "pve-9: 412.0 of 3400.0 MiB, 98.2 MiB/s, ETA 31s" */
export function describeImageProgress(p: ImageProgress): string {
  const mib = (n: number) => (n / (1 << 20)).toFixed(1);
  return `${p.image}: ${mib(p.done)} of ${mib(p.total)} MiB, ${mib(p.rateBps)} MiB/s${p.done < p.total ? `, ETA ${p.etaS}s` : ""}`;
}
