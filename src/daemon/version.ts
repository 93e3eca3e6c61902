// The hsd version, read once from package.json (the single source). Imported
// by the daemon wiring and hsctl (`hsctl version` prints both ends).

import { readFileSync } from "node:fs";

/** package.json sits two levels above both src/daemon (tsx) and dist/daemon (built). */
export const HSD_VERSION: string = (JSON.parse(
  readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
) as { version: string }).version;
