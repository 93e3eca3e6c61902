// Preflight for the images a level serves its children: each file present,
// readable, and of known sha256 (hashed once, cached; a configured sha256 must
// match). A missing image fails here, before any child is built.
// Imported by: src/daemon.

import { access, constants } from "node:fs/promises";
import type { HsdConfig } from "../config/config.js";
import type { CheckResult } from "../domain/checks.js";
import { hintFor } from "../domain/hints.js";
import type { ImageDigests } from "./image-digest.js";

export async function imageChecks(images: HsdConfig["images"], digests: ImageDigests): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const [name, e] of Object.entries(images.entries)) {
    const check = `image ${name}`;
    try {
      await access(e.path, constants.R_OK);
      const d = await digests.digest(e.path);
      if (e.sha256 && e.sha256 !== d.sha256) {
        out.push({ name: check, result: "failed", detail: `${e.path} has sha256 ${d.sha256}, config says ${e.sha256}`, hint: hintFor("ImageChecksumMismatch") });
      } else {
        out.push({ name: check, result: "ok", detail: `${e.path}, ${d.size} bytes, sha256 ${d.sha256.slice(0, 12)}` });
      }
    } catch (err) {
      out.push({ name: check, result: "failed", detail: `${e.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, hint: hintFor("ImageNotFound") });
    }
  }
  return out;
}
