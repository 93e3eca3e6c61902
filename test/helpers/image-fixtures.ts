// A level 0 that serves images for the image tests: a temp source dir with
// pve-9.img (random bytes of the given size), its sha256, the images: entries
// and the real endpoint (startLevel0) serving them.
// Imported by: test/images.

import { randomBytes, createHash } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startLevel0, type Level0 } from "./git-fixtures.js";
import { silentLogger } from "../../src/log/logger.js";
import { ImageDigests } from "../../src/images/image-digest.js";
import { imageServer } from "../../src/images/image-server.js";
import type { ImageEntry } from "../../src/config/config.js";

export interface ImageLevel0 {
  l0: Level0;
  srcDir: string;
  data: Buffer;
  sha: string;
  /** The served entries; a test may add files to srcDir and entries before it fetches them. */
  entries: Record<string, ImageEntry>;
  close(): Promise<void>;
}

export async function imageLevel0(prefix: string, size: number, maxImageTransfers: number): Promise<ImageLevel0> {
  const srcDir = join(tmpdir(), `${prefix}-${process.pid}-${Date.now()}`);
  await mkdir(srcDir, { recursive: true });
  const data = randomBytes(size);
  const sha = createHash("sha256").update(data).digest("hex");
  await writeFile(join(srcDir, "pve-9.img"), data);
  const entries: Record<string, ImageEntry> = { "pve-9": { path: join(srcDir, "pve-9.img"), sha256: "" } };
  const digests = new ImageDigests(join(srcDir, "digests.json"), silentLogger());
  const l0 = await startLevel0({ images: imageServer({ entries, digests }), maxImageTransfers });
  return {
    l0, srcDir, data, sha, entries,
    close: async () => { await l0.close(); await rm(srcDir, { recursive: true, force: true }); },
  };
}
