// Measures a level hsd's start-up and idle footprint: spawn -> ready line on
// HSD_READY_FD (sent after health is SERVING), a grpc.health check right
// after, and VmRSS once idle. Prints numbers only, no thresholds.
// Needs `npm run build` (npm run bench does it).

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { startHsd } from "../test/daemon/daemon-process.js";

const RUNS = Number(process.env.RUNS ?? 5);
const IDLE_MS = 3000;

function health(socket: string): Promise<number> {
  const c = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    c.makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), new grpc.Metadata(),
      { deadline: Date.now() + 10_000 }, (err, res) => { c.close(); if (err) reject(err); else resolve(res?.[1] ?? 0); });
  });
}

async function rssKiB(pid: number): Promise<number> {
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

const readyMs: number[] = [];
const servingMs: number[] = [];
const rss: number[] = [];
for (let i = 0; i < RUNS; i++) {
  const root = await mkdtemp(join(tmpdir(), "hsd-bench-"));
  const t0 = performance.now();
  const h = startHsd(["run", "--root", root], { HSD_LOG_PRETTY: "" });
  try {
    const ready = await h.ready;
    readyMs.push(performance.now() - t0);
    const status = await health(ready.socket);
    servingMs.push(performance.now() - t0);
    if (status !== 1) throw new Error(`health status ${status}, expected SERVING (1)`);
    await sleep(IDLE_MS); // a bench may wait: we want the settled idle footprint
    rss.push(await rssKiB(ready.pid));
    h.proc.kill("SIGTERM");
    const exit = await h.exited;
    if (exit.code !== 0) throw new Error(`hsd exited ${exit.code}`);
  } finally {
    await h.kill();
    await rm(root, { recursive: true, force: true });
  }
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `min ${s[0]!.toFixed(0)}  median ${s[Math.floor(s.length / 2)]!.toFixed(0)}  max ${s[s.length - 1]!.toFixed(0)}`;
};
console.log(`runs: ${RUNS}`);
console.log(`spawn -> ready line (health SERVING set) ms: ${stats(readyMs)}`);
console.log(`spawn -> health check answered SERVING ms: ${stats(servingMs)}`);
console.log(`idle RSS after ${IDLE_MS / 1000}s, MiB: ${stats(rss.map((k) => k / 1024))}  (raw KiB: ${rss.join(", ")})`);
const rssMedian = [...rss].sort((a, b) => a - b)[Math.floor(rss.length / 2)]! / 1024;
console.log(`goal ${rssMedian <= 80 ? "MET " : "MISS"}: idle RSS of an hsd <= 80 MiB (median ${rssMedian.toFixed(1)} MiB; started with its V8 flags, src/config/node-flags.ts)`);
