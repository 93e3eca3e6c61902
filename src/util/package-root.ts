// Where hsd's own package lives (package.json, daemon/, the PVE bundle), found
// from the running module rather than a fixed "../..": the same code runs from
// src/ (tsx), dist/<subsystem>/ (tsc) and the bundled dist/daemon/hsd.js.
// Imported by: anyone.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

/** The nearest directory above this module whose package.json is hsd's; ends with "/". */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, "package.json");
    if (existsSync(pj) && (JSON.parse(readFileSync(pj, "utf8")) as { name?: string }).name === "hsd") return (cached = `${dir}/`);
    const up = dirname(dir);
    if (up === dir) throw new Error("hsd's package.json not found above its modules");
    dir = up;
  }
}
