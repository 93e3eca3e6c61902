// The hsd version, read once from package.json (the single source).
// Imported by: src/cli, src/daemon.

import { readFileSync } from "node:fs";
import { packageRoot } from "../util/package-root.js";

export const HSD_VERSION: string = (JSON.parse(
  readFileSync(`${packageRoot()}package.json`, "utf8"),
) as { version: string }).version;
