// Typed access to iproute2's JSON output for one namespace, and bounded waits
// for link state the kernel applies asynchronously.
// Imported by: src/providers/local.

import { setTimeout as delay } from "node:timers/promises";
import { CommandFailedError, NetnsError } from "../../domain/errors.js";
import { firstLine, type CommandResult, type CommandRunner } from "../../util/command-runner.js";
import { DEFAULT_IP_TIMEOUT_MS, type NetnsCommonOptions } from "./netns-addressing.js";

export interface IpLink {
  ifindex: number;
  ifname: string;
  link_index?: number;
  link_netnsid?: number;
  operstate?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

export class Ip {
  constructor(
    private readonly run: CommandRunner,
    private readonly opts: NetnsCommonOptions,
    private readonly nsForErrors: string,
  ) {}

  /** Runs `ip [-n ns] args`; returns the raw result (never throws on exit code). */
  raw(args: string[], ns?: string): Promise<CommandResult> {
    const argv = ns === undefined ? ["ip", ...args] : ["ip", "-n", ns, ...args];
    return this.run(argv, { timeoutMs: this.opts.commandTimeoutMs ?? DEFAULT_IP_TIMEOUT_MS, signal: this.opts.signal, label: `ip ${args[0]}` });
  }

  /** Runs and requires success; failures become NetnsError naming the step. */
  async ok(step: string, args: string[], ns?: string, tolerate?: RegExp): Promise<CommandResult> {
    let res: CommandResult;
    try {
      res = await this.raw(args, ns);
    } catch (e) {
      if (e instanceof CommandFailedError) throw this.fail(step, e.message, e);
      throw e; // CommandTimeoutError / CancelledError keep their own codes
    }
    if (res.code !== 0 && !(tolerate && tolerate.test(res.stderr))) throw this.fail(step, firstLine(res.stderr) || `exit ${res.code}`);
    return res;
  }

  fail(step: string, why: string, cause?: unknown): NetnsError {
    return new NetnsError(`netns ${this.nsForErrors}: ${step} failed: ${why}`, { details: { nsName: this.nsForErrors, step }, cause });
  }

  /** One link with details, or undefined when it does not exist. */
  async link(ifname: string, ns?: string): Promise<IpLink | undefined> {
    const res = await this.raw(["-d", "-j", "link", "show", "dev", ifname], ns);
    if (res.code !== 0) {
      if (/does not exist|Cannot find device/i.test(res.stderr)) return undefined;
      throw this.fail(`ip link show ${ifname}`, firstLine(res.stderr) || `exit ${res.code}`);
    }
    return this.parse<IpLink[]>(res.stdout, `ip link show ${ifname}`)[0];
  }

  /** IPv4 addresses (address, prefix) on one link. */
  async addrs(ifname: string, ns?: string): Promise<{ local: string; prefixlen: number }[]> {
    const res = await this.ok(`ip addr show ${ifname}`, ["-j", "-4", "addr", "show", "dev", ifname], ns);
    const links = this.parse<IpLink[]>(res.stdout, `ip addr show ${ifname}`);
    return (links[0]?.addr_info ?? []).filter((a) => a.family === "inet").map((a) => ({ local: a.local, prefixlen: a.prefixlen }));
  }

  /** Every IPv4 address in a namespace (the caller's when ns is undefined). */
  async allAddrs(ns?: string): Promise<string[]> {
    const res = await this.ok("ip addr show", ["-j", "-4", "addr", "show"], ns);
    return this.parse<IpLink[]>(res.stdout, "ip addr show").flatMap((l) => (l.addr_info ?? []).map((a) => a.local));
  }

  async netnsNames(): Promise<string[]> {
    const res = await this.ok("ip netns list", ["-j", "netns", "list"]);
    // iproute2 prints nothing at all (not "[]") when there are no namespaces.
    if (res.stdout.trim() === "") return [];
    return this.parse<{ name: string }[]>(res.stdout, "ip netns list").map((n) => n.name);
  }

  /** A listed namespace whose file is not a live netns (see header) fails this. */
  async usable(ns: string): Promise<boolean> {
    const res = await this.raw(["-j", "link", "show", "dev", "lo"], ns);
    return res.code === 0;
  }

  async pids(ns: string): Promise<number[]> {
    const res = await this.raw(["netns", "pids", ns]);
    if (res.code !== 0) {
      if (/No such file|Cannot open|Invalid argument/i.test(res.stderr)) return [];
      throw this.fail("ip netns pids", firstLine(res.stderr) || `exit ${res.code}`);
    }
    return res.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number);
  }

  private parse<T>(text: string, step: string): T {
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw this.fail(step, "unparseable ip -j output", e);
    }
  }
}

/** Bounded polling for a state change the kernel applies asynchronously. */
export async function waitFor(what: string, nsName: string, timeoutMs: number, check: () => Promise<boolean>, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 20; ; wait = Math.min(wait * 2, 250)) {
    if (await check()) return;
    if (Date.now() >= deadline) {
      throw new NetnsError(`netns ${nsName}: ${what} not reached within ${timeoutMs} ms`, { details: { nsName, step: what, timeoutMs } });
    }
    await delay(wait, undefined, { signal });
  }
}

