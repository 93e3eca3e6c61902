// CPU time from /proc, for benches on a shared host where wall time swings
// with other people's load: a process's own user+sys plus that of the
// children it has waited for (git, ssh, a child hsd that exited), in ms.
// Imported by: bench/nest.ts.

import { readFile } from "node:fs/promises";

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** utime + stime + cutime + cstime of `pid` ("self" for this process), ms; 0 if it is gone. */
export async function procCpuMs(pid: number | "self"): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  // Fields after the command name (which may hold spaces) start at ") ": state is field 3, utime 14 .. cstime 17.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (rest.length < 15) return 0;
  return [11, 12, 13, 14].reduce((s, i) => s + Number(rest[i]), 0) * TICK_MS;
}

/** Sum over live processes (none of them waits for another: each hsd's waited children are in its own count). */
export async function sumCpuMs(pids: readonly number[]): Promise<number> {
  return (await Promise.all(pids.map(procCpuMs))).reduce((a, b) => a + b, 0);
}
