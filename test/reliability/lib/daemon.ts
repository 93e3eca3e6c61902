// A standalone real hsd for the reliability suite: a level-0 root in a temp
// dir, hsd.yaml written by the test, started with the shared daemon helper
// (readiness from the HSD_READY_FD pipe, never polled). Imported by
// test/reliability/** only.

import { mkdir, writeFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { startHsd, type HsdProcess, type ReadyLine } from "../../daemon/daemon-process.js";

export interface Level0 { root: string; hsd: HsdProcess; ready: ReadyLine; rssPeakKb(): Promise<number> }

export interface Level0Options {
  /** Extra lines inside the `ssh:` block, e.g. "  max_upload_packs: 4\n". */
  ssh?: string;
  /** log.level (default warn). */
  logLevel?: string;
}

/** Starts hsd on `root` with `yaml` (top-level sections other than ssh/log, appended) and waits for it to be ready. */
export async function startLevel0(root: string, yaml = "", env: NodeJS.ProcessEnv = {}, o: Level0Options = {}): Promise<Level0> {
  await mkdir(root, { recursive: true, mode: 0o700 });
  const head = `ssh:\n  host: 127.0.0.1\n  port: 0\n${o.ssh ?? ""}log:\n  level: ${o.logLevel ?? "warn"}\n`;
  await writeFile(join(root, "hsd.yaml"), `${head}${yaml}`, { mode: 0o600 });
  const hsd = startHsd(["run", "--root", root], env);
  const ready = await hsd.ready;
  return { root, hsd, ready, rssPeakKb: () => rssPeakKb(ready.pid) };
}

/** VmHWM of a live process, in KiB (the kernel's own peak RSS record). */
export async function rssPeakKb(pid: number): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? NaN);
}
