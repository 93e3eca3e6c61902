// Figures the reliability suite reports (kills survived, latencies, peak RSS,
// fuzz cases, canary hits, torn files): each test appends JSON lines to the
// file named by HSD_RELIABILITY_FIGURES; run.mjs prints one summary at the end.
// Imported by test/reliability/** only.

import { appendFileSync } from "node:fs";

export type Figure = { key: string; value: number | string; note?: string };

/** Records a figure (also printed as a test diagnostic line). */
export function figure(key: string, value: number | string, note?: string): void {
  const line = JSON.stringify({ key, value, note } satisfies Figure);
  const file = process.env.HSD_RELIABILITY_FIGURES;
  if (file) appendFileSync(file, `${line}\n`);
  process.stdout.write(`# figure ${key} = ${value}${note ? ` (${note})` : ""}\n`);
}
