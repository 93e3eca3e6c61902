// Test helpers for the netns suite: TCP servers and probes run inside a
// namespace (via execPrefix), a run-unique name prefix, and a sweeping cleanup.
// Imported only by test/netns/*.test.ts.

import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { execPrefix } from "../../src/providers/local/netns.js";
import { runCommand } from "../../src/util/command-runner.js";

/** Unique to this test process: every name this file creates starts with it (≤ 7 chars). */
export function runPrefix(tag: string): string {
  const p = `h${tag}${process.pid.toString(36)}`;
  if (p.length > 10) throw new Error(`prefix ${p} too long for 14-char netns names`);
  return p;
}

function inNs(ns: string | undefined, argv: string[]): string[] {
  return ns === undefined ? argv : [...execPrefix(ns), ...argv];
}

export interface Server {
  port: number;
  proc: ChildProcess;
  stop(): Promise<void>;
}

const servers = new Set<ChildProcess>();

/**
 * A TCP server inside `ns` (undefined: the test's own netns) bound to `host`;
 * each connection receives `banner` and is closed. Resolves once listening.
 */
export async function startServer(ns: string | undefined, host: string, banner: string, timeoutMs = 10_000): Promise<Server> {
  const script = `const net=require("net");const [h,b]=process.argv.slice(1);
net.createServer((s)=>s.end(b)).listen(0,h,function(){console.log("PORT "+this.address().port)});`;
  const argv = inNs(ns, [process.execPath, "-e", script, host, banner]);
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  servers.add(proc);
  const stop = async () => {
    servers.delete(proc);
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    proc.kill("SIGKILL");
    await exited;
  };
  let stderr = "";
  proc.stderr!.on("data", (c: Buffer) => { stderr += c.toString(); });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`server in ${ns ?? "host"} on ${host} not listening within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    proc.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    proc.once("exit", (code) => { clearTimeout(timer); reject(new Error(`server in ${ns ?? "host"} exited ${code}: ${stderr}`)); });
  }).catch(async (e) => { await stop(); throw e; });
  return { port, proc, stop };
}

export async function stopAllServers(): Promise<void> {
  await Promise.all([...servers].map(async (p) => {
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once("exit", () => r()));
    p.kill("SIGKILL");
    await exited;
  }));
  servers.clear();
}

export type Probe = { ok: true; data: string } | { ok: false; code: string };

/**
 * One TCP connect from inside `ns` (undefined: here) to host:port, bounded by
 * timeoutMs. ok with the banner, or the error code (TIMEOUT when nothing answered).
 */
export async function probe(ns: string | undefined, host: string, port: number, timeoutMs = 3_000): Promise<Probe> {
  if (ns === undefined) return probeHere(host, port, timeoutMs);
  const script = `const net=require("net");const [h,p,t]=process.argv.slice(1);let d="";
const done=(r)=>{console.log(JSON.stringify(r));process.exit(0)};
const s=net.connect({host:h,port:+p});s.setTimeout(+t,()=>{s.destroy();done({ok:false,code:"TIMEOUT"})});
s.on("data",(c)=>d+=c);s.on("end",()=>done({ok:true,data:d}));s.on("error",(e)=>done({ok:false,code:e.code||String(e)}));`;
  const res = await runCommand(inNs(ns, [process.execPath, "-e", script, host, String(port), String(timeoutMs)]), {
    timeoutMs: timeoutMs + 10_000, check: true,
  });
  return JSON.parse(res.stdout.trim()) as Probe;
}

function probeHere(host: string, port: number, timeoutMs: number): Promise<Probe> {
  return new Promise((resolve) => {
    let d = "";
    const s = net.connect({ host, port });
    s.setTimeout(timeoutMs, () => { s.destroy(); resolve({ ok: false, code: "TIMEOUT" }); });
    s.on("data", (c) => { d += c.toString(); });
    s.on("end", () => resolve({ ok: true, data: d }));
    s.on("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, code: e.code ?? String(e) }));
  });
}

/** Polls `fn` until it returns true, at most timeoutMs (for state that settles asynchronously). */
export async function eventually(what: string, timeoutMs: number, fn: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not true within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function netnsList(): Promise<string[]> {
  const r = await runCommand(["ip", "-j", "netns", "list"], { check: true });
  return r.stdout.trim() === "" ? [] : (JSON.parse(r.stdout) as { name: string }[]).map((n) => n.name);
}

export async function linkNames(ns?: string): Promise<string[]> {
  const argv = ns === undefined ? ["ip", "-j", "link", "show"] : ["ip", "-n", ns, "-j", "link", "show"];
  const r = await runCommand(argv, { check: true });
  return (JSON.parse(r.stdout) as { ifname: string }[]).map((l) => l.ifname);
}

/**
 * Last-resort cleanup, independent of the code under test: kill everything in
 * our namespaces, delete our veths on the host, delete our namespaces.
 */
export async function sweep(prefix: string): Promise<void> {
  await stopAllServers();
  const names = (await netnsList()).filter((n) => n.startsWith(prefix));
  for (const n of names) {
    const pids = await runCommand(["ip", "netns", "pids", n]);
    for (const p of pids.stdout.split(/\s+/).filter(Boolean)) {
      try { process.kill(Number(p), "SIGKILL"); } catch { /* gone */ }
    }
  }
  for (const ifname of (await linkNames()).filter((l) => l.startsWith(prefix))) {
    await runCommand(["ip", "link", "del", "dev", ifname]);
  }
  for (const n of names) await runCommand(["ip", "netns", "del", n]);
}
