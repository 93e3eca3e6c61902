// The embedded `local` provider: a child level is a directory under the
// parent's state/levels/<name>/ plus an `hsd run --root` process in its own
// process group (and, with isolation netns, its own network namespace). Used
// only through the Provider interface.
// Imported by: src/providers.

import { spawn } from "node:child_process";
import { mkdir, rm, open } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../../util/atomic-write.js";
import { childConfigYaml } from "../child-config.js";
import { ProviderError, CancelledError } from "../../domain/errors.js";
import type { Logger } from "../../log/logger.js";
import type { ChildEndpoint, ChildHandle, ChildInstallSpec, PhaseContext, Provider } from "../provider.js";
import { readyEndpoint } from "../provider.js";
import type { CheckResult } from "../../domain/checks.js";
import { levelPaths } from "../../config/level-layout.js";
import { readLogTail, readyFromPipe, type ReadyInfo } from "../../util/ready-pipe.js";
import { killLevelTree, pidAlive, pidOf } from "./level-process.js";
import { writeBootUnit } from "./local-reboot.js";
import type { NetnsOps } from "./netns-ops.js";
import type { IsolationMode } from "./local-options.js";
import { STEP_HINTS } from "../../domain/hints.js";
import { withoutSystemdEnv } from "../../util/systemd-env.js";

export interface LocalProviderOptions {
  /** The parent level's root; children live under its state/levels/. */
  readonly parentRoot: string;
  /** argv that runs hsd, e.g. [process.execPath, "/abs/dist/daemon/hsd.js"]. */
  readonly hsdCommand: readonly string[];
  readonly isolation: IsolationMode;
  /** The parent's level path (names from the top); makes netns names unique tree-wide. */
  readonly levelPath: readonly string[];
  readonly netns: NetnsOps | null;
  readonly shutdownMs: number;
  readonly log: Logger;
  /** Extra env for children (tests). */
  readonly env?: Readonly<Record<string, string>>;
  /** argv prefix per child level path that puts the child in a scope of its own (under systemd; see child-scope.ts). */
  readonly scopePrefix?: (levelPath: readonly string[]) => string[];
}

/**
 * The environment of a child hsd: the parent's minus every systemd service
 * variable (a child must never notify the parent's service manager or take its
 * watchdog, sockets or invocation), plus what the child is told.
 */
export function localChildEnv(parent: NodeJS.ProcessEnv, extra: Readonly<Record<string, string>>, levelPath: readonly string[]): Record<string, string> {
  return { ...withoutSystemdEnv({ ...parent, ...extra }), HSD_READY_FD: "3", HSD_LOG_PRETTY: "", HSD_LEVEL_PATH: levelPath.join("/") };
}

interface LocalData {
  dir: string;
  pid?: number;
  netns?: { nsName: string; parentAddr: string; childAddr: string };
}

export class LocalProvider implements Provider {
  readonly name = "local" as const;

  constructor(private readonly o: LocalProviderOptions) {}

  async preflight(_ctx: PhaseContext): Promise<CheckResult[]> {
    const checks: CheckResult[] = [{ name: "hsd runtime", result: "ok", detail: this.o.hsdCommand.join(" ") }];
    if (this.o.isolation === "netns") {
      const c = this.o.netns ? await this.o.netns.available() : { ok: false, reason: "netns support not built in" };
      checks.push({
        name: "network namespaces", result: c.ok ? "ok" : "failed", detail: c.ok ? "ip netns usable" : c.reason ?? "unavailable",
        hint: c.ok ? undefined : STEP_HINTS.netnsUnavailable,
      });
    }
    return checks;
  }

  async provision(name: string, _depth: number, ctx: PhaseContext): Promise<ChildHandle> {
    const dir = join(levelPaths(this.o.parentRoot).levelsDir, name);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const data: LocalData = { dir };
    if (this.o.isolation === "netns") {
      const ns = await this.o.netns!.create([...this.o.levelPath, name], ctx.signal);
      data.netns = { nsName: ns.nsName, parentAddr: ns.parentAddr, childAddr: ns.childAddr };
    }
    return { name, data: data as unknown as Record<string, unknown> };
  }

  async boot(child: ChildHandle, _ctx: PhaseContext): Promise<ChildHandle & { address: string }> {
    const data = child.data as unknown as LocalData;
    return { ...child, address: data.netns ? data.netns.childAddr : "127.0.0.1" };
  }

  /** A local leaf is a directory: no machine, nothing running in it, so its reboot is over at once (its disk, the directory, stays). */
  async reboot(child: ChildHandle, ctx: PhaseContext): Promise<ChildHandle & { address: string }> {
    ctx.emit({ kind: "log", message: `${child.name} is a directory on this host: nothing runs in it to reboot` });
    return this.boot(child, ctx);
  }

  async install(child: ChildHandle, spec: ChildInstallSpec, ctx: PhaseContext): Promise<{ handle: ChildHandle; endpoint: ChildEndpoint }> {
    const data = { ...(child.data as unknown as LocalData) };
    // A reinstall stops the old hsd and, even when it is already dead, every
    // descendant it started: they point at its old SSH port and would be orphans.
    if (data.pid) await killLevelTree(data.dir, this.o.shutdownMs, this.o.netns, this.o.log, { keepDir: true });
    const address = data.netns ? data.netns.childAddr : "127.0.0.1";
    const yaml = childConfigYaml(spec, {
      sshHost: data.netns ? "0.0.0.0" : "127.0.0.1",
      advertiseHost: address,
      parentHost: data.netns ? data.netns.parentAddr : spec.parentHost,
      // A local child is a directory, not a node: its images live in it.
      imageDir: join(data.dir, "images"),
      // No fixed port: a free one, kept across the child's restarts (its reboot), so the parent's endpoint stays right.
    }, { provider: "local", isolation: this.o.isolation }, null);
    const paths = levelPaths(data.dir);
    await mkdir(paths.runDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(paths.config, yaml, { mode: 0o600 });

    const childPath = [...this.o.levelPath, spec.name];
    const argv = [
      ...(this.o.scopePrefix?.(childPath) ?? []),
      ...(data.netns ? this.o.netns!.execPrefix(data.netns.nsName) : []), ...this.o.hsdCommand, "run", "--root", data.dir,
    ];
    // Its "unit": a reboot of the child starts hsd again exactly so (local-reboot.ts).
    await writeBootUnit(data.dir, { argv, levelPath: childPath.join("/") });
    const logFh = await open(paths.log, "a", 0o600);
    ctx.emit({ kind: "log", message: `starting hsd for ${spec.name}` });
    const proc = spawn(argv[0]!, argv.slice(1), {
      detached: true, // its own process group: the tree is stopped as one
      stdio: ["ignore", logFh.fd, logFh.fd, "pipe"],
      env: localChildEnv(process.env, this.o.env ?? {}, childPath),
    });
    await logFh.close();
    proc.unref();
    if (!proc.pid) throw new ProviderError(`could not start hsd for ${spec.name}`, { details: { level: spec.name } });
    data.pid = proc.pid;
    let ready: ReadyInfo;
    try {
      ready = await readyFromPipe(proc, ctx.signal, () => readLogTail(paths.log));
    } catch (err) {
      try { process.kill(-proc.pid, "SIGKILL"); } catch { /* already gone */ }
      if (ctx.signal.aborted && !(err instanceof ProviderError)) throw ctx.signal.reason ?? new CancelledError("install cancelled");
      throw err;
    }
    return {
      handle: { name: child.name, data: data as unknown as Record<string, unknown> },
      endpoint: readyEndpoint(address, ready),
    };
  }

  async alive(child: ChildHandle): Promise<boolean> {
    const data = child.data as unknown as LocalData;
    // A child that rebooted runs under a new pid: its ready.json has it.
    const pid = (await pidOf(data.dir)) ?? data.pid;
    return pid !== undefined && pidAlive(pid, data.dir);
  }

  async destroy(child: ChildHandle, _ctx: PhaseContext): Promise<void> {
    const data = child.data as unknown as LocalData;
    await killLevelTree(data.dir, this.o.shutdownMs, this.o.netns, this.o.log, { keepDir: false });
    if (data.netns) await this.o.netns!.destroy(data.netns.nsName);
    await rm(data.dir, { recursive: true, force: true });
  }
}

