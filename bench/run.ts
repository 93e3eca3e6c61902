// Runs every bench/*.ts except this one, one after another, each in its own
// process (`node --import tsx bench/<x>.ts`), streaming their output.
// `npm run bench` calls this.

import { readdirSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const benches = readdirSync(here).filter((f) => f.endsWith(".ts") && f !== "run.ts").sort();
const only = process.argv.slice(2);
let failed = 0;
for (const b of benches) {
  if (only.length > 0 && !only.some((o) => b.includes(o))) continue;
  console.log(`\n=== bench/${b} ===`);
  const r = spawnSync(process.execPath, ["--import", "tsx", join(here, b)], { stdio: "inherit", cwd: join(here, "..") });
  if (r.status !== 0) { failed++; console.log(`bench/${b} exited with ${r.status ?? r.signal}`); }
}
process.exit(failed > 0 ? 1 : 0);
