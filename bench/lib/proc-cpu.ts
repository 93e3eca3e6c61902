// CPU time from /proc, for benches on a shared host where wall time swings
// with other people's load: a process's own user+sys plus that of the
// children it has waited for (git, ssh, a child hsd that exited), in ms.
// Imported by: bench/nest.ts, bench/lib/sync-harness.ts.

import { readFileSync } from "node:fs";

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** `pid`'s own user+sys and that of its waited-for children, ms; zeros if it is gone. */
export function procTimes(pid: number | "self"): { selfMs: number; childrenMs: number } {
  const stat = (() => { try { return readFileSync(`/proc/${pid}/stat`, "utf8"); } catch { return ""; } })();
  // Fields after the command name (which may hold spaces) start at ") ": state is field 3, utime 14 .. cstime 17.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (rest.length < 15) return { selfMs: 0, childrenMs: 0 };
  const f = (i: number) => Number(rest[i]) * TICK_MS;
  return { selfMs: f(11) + f(12), childrenMs: f(13) + f(14) };
}

/** utime + stime + cutime + cstime of `pid` ("self" for this process), ms; 0 if it is gone. */
export async function procCpuMs(pid: number | "self"): Promise<number> {
  const t = procTimes(pid);
  return t.selfMs + t.childrenMs;
}

/** Sum over live processes (none of them waits for another: each hsd's waited children are in its own count). */
export async function sumCpuMs(pids: readonly number[]): Promise<number> {
  return (await Promise.all(pids.map(procCpuMs))).reduce((a, b) => a + b, 0);
}
