// A fetching level in its own process, so a test can read that process's
// peak RSS (VmHWM) and stop its git children: connects to the parent, prints
// its RSS, runs one syncFromParent, prints the outcome (typed error code and
// details on failure) and its VmHWM as JSON lines. Run by test/git/** only:
// node --import tsx test/helpers/fetch-child.ts '<json FetchChildArgs>'

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { syncFromParent } from "../../src/git/sync-from-parent.js";
import { ParentConnection } from "../../src/ssh/parent-connection.js";
import { levelPaths } from "../../src/config/level-layout.js";
import { silentLogger } from "../../src/log/logger.js";
import { HsError } from "../../src/domain/errors.js";

export interface FetchChildArgs {
  host: string; port: number; fp: string; key: string; names: string[]; root: string;
  commandTimeoutMs: number;
}

export type FetchChildLine =
  | { type: "connected"; rssKiB: number }
  | { type: "progress"; bytes: number }
  | { type: "done"; ok: true; heads: Record<string, string>; bytes: number; hwmKiB: number }
  | { type: "done"; ok: false; code: string; details: Record<string, unknown>; hwmKiB: number };

/** A field of /proc/self/status in KiB ("VmHWM", "VmRSS"). */
export function statusKiB(field: string, pid: number | "self" = "self"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

const say = (l: FetchChildLine) => process.stdout.write(`${JSON.stringify(l)}\n`);

async function main(a: FetchChildArgs): Promise<void> {
  const log = silentLogger();
  const parent = { host: a.host, port: a.port, hostKeyFingerprint: a.fp };
  const conn = new ParentConnection({ parent, userKeyPath: a.key, connectTimeoutMs: 10_000, log });
  await conn.connect();
  say({ type: "connected", rssKiB: statusKiB("VmRSS") });
  const p = levelPaths(a.root);
  let next = 0;
  try {
    const res = await syncFromParent({
      parent, userKeyPath: a.key, repoNames: a.names, exportsDir: p.reposDir, workDir: p.workDir,
      connectTimeoutMs: 10_000, commandTimeoutMs: a.commandTimeoutMs, log, connection: conn,
      onProgress: (ev) => {
        if (ev.phase !== "Receiving bytes" || ev.loaded < next) return;
        next = ev.loaded + (1 << 20);
        say({ type: "progress", bytes: ev.loaded });
      },
    });
    say({ type: "done", ok: true, heads: Object.fromEntries(res.repos.map((r) => [r.name, r.servedCommit])), bytes: res.bytes, hwmKiB: statusKiB("VmHWM") });
  } catch (err) {
    const e = err instanceof HsError ? err : undefined;
    say({ type: "done", ok: false, code: e?.code ?? `untyped: ${String(err)}`, details: e?.details ?? {}, hwmKiB: statusKiB("VmHWM") });
  } finally {
    conn.close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main(JSON.parse(process.argv[2]!) as FetchChildArgs);
