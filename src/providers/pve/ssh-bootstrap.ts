// Installing hsd into a fresh VM over its OpenSSH session: wait out cloud-init
// and the apt/dpkg locks (seed lesson 7) while the bundle streams into a staging
// dir, then in one round trip swap it in, make sure a node >= 20 is there, write
// the config and unit, (re)start the service and wait for its ready.json: four
// round trips when nothing needs waiting for, the checks' two beside the copy.
// After a boot CD (boot-cd.ts), three: the checks, then hsd found and its ready.json.
// Config and bundle travel on stdin, never in a command line.
// Imported by: src/providers/pve.

import { AptLockedError, CommandTimeoutError, ProviderError } from "../../domain/errors.js";
import { waitForCloudInit } from "./cloud-init-wait.js";
import { withTimeout } from "../../util/timeout.js";
import type { ReadyInfo } from "../../util/ready-pipe.js";
import type { CommandResult } from "../../util/command-runner.js";
import { defaultSleep, type Sleep } from "./pve-client.js";
import type { GuestSsh } from "./guest-ssh.js";
import { STEP_HINTS } from "../../domain/hints.js";
import { BUNDLE_SHA_FILE, installLines, installLinesError, shellQuote as q, type GuestPaths } from "./install-script.js";

export { GuestSsh, sshKeyFingerprint } from "./guest-ssh.js";

export { guestPaths, type GuestPaths } from "./install-script.js";

export interface BootstrapOptions {
  /** The tar.gz made by scripts/bundle.mjs, as bytes. */
  readonly bundle: Buffer;
  readonly paths: GuestPaths;
  readonly configYaml: string;
  readonly unitText: string;
  /** Prepended to PATH for every remote command (tests may put fakes first). */
  readonly pathPrefix?: string;
  readonly cloudInitTimeoutMs?: number;
  readonly aptLockTimeoutMs?: number;
  /** Bound on the wait for ready.json after the service (re)starts. */
  readonly readyTimeoutMs?: number;
  readonly commandTimeoutMs?: number;
  /** Bundle copy + unpack (it can be tens of MB). */
  readonly copyTimeoutMs?: number;
  readonly pollMs?: number;
  readonly sleep?: Sleep;
  readonly signal: AbortSignal;
  readonly log: (message: string) => void;
  /**
   * The VM had a boot CD (boot-cd.ts): hsd may be running already. If the child's
   * installed bundle and config have these sha256s and its service is up, the install
   * only waits for its ready.json; otherwise it installs over SSH as without a CD.
   */
  readonly booted?: { readonly bundleSha256: string; readonly configSha256: string };
}

const firstLine = (s: string) => s.trim().split("\n")[0] ?? "";
export { MIN_NODE_MAJOR } from "./install-script.js";

/** Runs the whole install; resolves with the child's ready.json. */
export async function bootstrapHsd(ssh: GuestSsh, o: BootstrapOptions): Promise<ReadyInfo> {
  const sleep = o.sleep ?? defaultSleep;
  const env = o.pathPrefix ? `PATH=${q(o.pathPrefix)}:"$PATH" ` : "";
  const cmdMs = o.commandTimeoutMs ?? 60_000;
  const p = o.paths;
  const run: Run = (cmd, timeoutMs = cmdMs, stdin, signal = o.signal) => ssh.exec(`${env}sh -c ${q(cmd)}`, { timeoutMs, stdin, signal });

  const next = q(`${p.installDir}.next`);
  const readyMs = o.readyTimeoutMs ?? 120_000;
  const readyS = Math.max(1, Math.ceil(readyMs / 1000));
  if (o.booted) {
    // cloud-init done means its runcmd, and so the CD's script, has run: then one round trip.
    await runChecks(o, run, sleep, cmdMs);
    const found = await run(bootedLines(p, o.booted, readyS).join("\n"), readyMs + cmdMs);
    if (found.code === 0) {
      const ready = readyOf(found, readyMs);
      o.log(`hsd ${ready.version} started from the boot CD is running on the child (ssh port ${ready.sshPort})`);
      return ready;
    }
    o.log(`hsd from the boot CD is not usable (${BOOTED_MISS[found.code] ?? `exit ${found.code}: ${firstLine(found.stderr)}`}); installing it over SSH`);
    await stageBundle(o, run, next);
    return startStaged(o, run, readyMs, readyS);
  }
  // The checks (cloud-init, the apt lock) and the bundle's copy share nothing but the
  // connection: the bundle streams into the staging dir on its own channel while the
  // checks run on theirs. Nothing outside the staging dir changes, and nothing starts,
  // until both checks have passed. A failed copy ends the checks at once.
  const copyFailed = new AbortController();
  const checks = runChecks({ ...o, signal: AbortSignal.any([o.signal, copyFailed.signal]) }, run, sleep, cmdMs);
  const staged = stageBundle(o, run, next).catch((e: unknown) => { copyFailed.abort(e); throw e; });
  const [checked, copied] = await Promise.allSettled([checks, staged]);
  if (copied.status === "rejected") throw copied.reason;
  if (checked.status === "rejected") {
    // The staged bundle is of no use to anyone: a re-install stages afresh.
    await run(`rm -rf ${next}`).catch(() => undefined);
    throw checked.reason;
  }

  return startStaged(o, run, readyMs, readyS);
}

/**
 * The rest in one round trip, the steps numbered by exit code (an SSH session costs a
 * channel, a fork and a login shell on the child, each time), config on stdin.
 */
async function startStaged(o: BootstrapOptions, run: Run, readyMs: number, readyS: number): Promise<ReadyInfo> {
  const p = o.paths;
  o.log("starting the child's hsd and waiting for it to report ready");
  // restart, not `enable --now`: a re-install must run the new bundle and config; with
  // Type=notify it returns once hsd is up, so it shares the readiness bound. Then one
  // remote loop instead of a command per poll (waitReadyLines).
  const started = await run([
    ...installLines({ paths: p, unitText: o.unitText, config: "cat" }),
    `systemctl restart hsd || exit 33`,
    ...waitReadyLines(p.readyFile, readyS),
  ].join("\n"), 2 * readyMs + 10_000, o.configYaml);
  const failed = installLinesError(started.code, started.stderr, p);
  if (failed) throw failed;
  if (started.code === 33) {
    throw new ProviderError(`the child's hsd service did not start: ${firstLine(started.stderr)}`, {
      details: { step: "start", exitCode: started.code, hint: STEP_HINTS.childHsdLog },
    });
  }
  const ready = readyOf(started, readyMs);
  o.log(`hsd ${ready.version} is running on the child (ssh port ${ready.sshPort})`);
  return ready;
}

type Run = (cmd: string, timeoutMs?: number, stdin?: Buffer | string, signal?: AbortSignal) => Promise<CommandResult>;

/** What a boot CD's install lacked, by the exit code of bootedLines. */
const BOOTED_MISS: Record<number, string> = {
  3: "its service failed before it was ready",
  40: "no bundle from it, or another one",
  41: "its config differs from this level's",
  42: "its service is not running",
  124: "it did not report ready in time",
};

/**
 * Is the hsd a boot CD installed this level's (the bundle's and config's sha256) and
 * running (40-42 when not)? Then its ready.json, waited for as after a start.
 */
function bootedLines(p: GuestPaths, want: { bundleSha256: string; configSha256: string }, readyS: number): string[] {
  return [
    `[ "$(cat ${q(`${p.installDir}/${BUNDLE_SHA_FILE}`)} 2>/dev/null)" = ${q(want.bundleSha256)} ] || exit 40`,
    `c=$(sha256sum < ${q(p.configPath)} 2>/dev/null) && [ "\${c%% *}" = ${q(want.configSha256)} ] || exit 41`,
    `case "$(systemctl is-active hsd 2>/dev/null)" in active|activating|reloading) ;; *) exit 42 ;; esac`,
    ...waitReadyLines(p.readyFile, readyS),
  ];
}

/** cloud-init finished, then the apt/dpkg locks free (seed lesson 7): the lock is probed only once cloud-init is done. */
async function runChecks(o: BootstrapOptions, run: Run, sleep: Sleep, cmdMs: number): Promise<void> {
  await waitForCloudInit((cmd, timeoutMs) => run(cmd, timeoutMs, undefined, o.signal), o, cmdMs);
  // The timers are stopped in the same round trip as the first lock probe; later probes repeat the probe alone.
  const stopTimers = "systemctl stop apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service";
  const lockMs = o.aptLockTimeoutMs ?? 300_000;
  const locks = "/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock";
  let holders = "";
  const t0 = Date.now();
  await withTimeout(lockMs, () => new AptLockedError(`apt/dpkg lock still held after ${lockMs} ms (by ${holders || "?"})`, {
    details: { step: "apt-lock", holders, waitedMs: Date.now() - t0 },
  }), async (signal) => {
    for (let said = false; ;) {
      // fuser exits 1 when no process holds any of them; the holders' names are for the operator.
      const probe = `p=$(fuser ${locks} 2>/dev/null) || exit 1; ps -o comm= -p "$(echo $p | tr -s ' ' ',')" 2>/dev/null | sort -u | tr '\\n' ' '`;
      const r = await run(said ? probe : `${stopTimers} >/dev/null 2>&1\n${probe}`, cmdMs, undefined, o.signal);
      if (r.code !== 0) return;
      holders = r.stdout.trim();
      if (!said) o.log(`waiting for apt/dpkg to release its lock (held by ${holders || "?"})`);
      said = true;
      await sleep(o.pollMs ?? 2000, signal);
    }
  }, o.signal);
  if (holders) o.log("apt/dpkg lock released");
}

/**
 * The bundle into <installDir>.next, unpacked as it arrives (tee keeps the copy): the
 * copy and the unpack overlap instead of taking turns. Whatever tar leaves unread is
 * drained, so tee always writes the whole copy and the size check tells a short copy
 * (10) from a bundle tar refused (11). The bundle stays in the install as
 * hsd-bundle.tar.gz: the child installs its own children from it.
 */
async function stageBundle(o: BootstrapOptions, run: Run, next: string): Promise<void> {
  o.log(`copying the hsd bundle (${o.bundle.length} bytes)`);
  const r = await run([
    `rm -rf ${next} && mkdir -p ${next} && cd ${next} || exit 10`,
    `tee .bundle.tgz | { tar -xzf -; r=$?; cat > /dev/null; exit $r; } || { [ "$(wc -c < .bundle.tgz)" -eq ${o.bundle.length} ] && exit 11; exit 10; }`,
    `[ "$(wc -c < .bundle.tgz)" -eq ${o.bundle.length} ] || exit 10`,
    `mv .bundle.tgz hsd-bundle.tar.gz || exit 11`,
  ].join("\n"), o.copyTimeoutMs ?? 300_000, o.bundle);
  if (r.code === 0) return;
  const what = r.code === 10 ? "bundle copy" : r.code === 11 ? "bundle unpack" : "bundle staging";
  throw new ProviderError(`${what} failed on the child (exit ${r.code}): ${firstLine(r.stderr)}`, { details: { step: what, exitCode: r.code } });
}

/**
 * Waits on the child for <readyFile>, then prints it: the file every 20 ms (a test and
 * a sleep; under systemd it is there at once), the unit's state every 0.2 s (a failed
 * unit ends it, 3); `timeout` bounds it on the child (124), the exec timeout bounds it here.
 */
export function waitReadyLines(readyFile: string, readyS: number): string[] {
  const f = q(readyFile);
  return [
    `timeout ${readyS} sh -c 'i=0; until [ -s "$0" ]; do [ $((i % 10)) -eq 0 ] && systemctl is-failed --quiet hsd && exit 3; i=$((i + 1)); sleep 0.02; done' ${f}`,
    `rc=$?; [ $rc -eq 0 ] && cat ${f}; exit $rc`,
  ];
}

/** The ready.json a waitReadyLines run printed, or its failure typed. */
export function readyOf(r: CommandResult, readyMs: number): ReadyInfo {
  if (r.code === 124) {
    throw new CommandTimeoutError(`the child's hsd did not report ready within ${readyMs} ms`, {
      details: { step: "ready", hint: STEP_HINTS.childHsdStatus },
    });
  }
  if (r.code === 3) {
    throw new ProviderError("the child's hsd service failed before it was ready", {
      details: { step: "ready", hint: STEP_HINTS.childHsdLog },
    });
  }
  if (r.code !== 0) throw new ProviderError(`waiting for the child's ready.json failed (exit ${r.code}): ${firstLine(r.stderr)}`, { details: { step: "ready" } });
  return parseReady(r.stdout);
}

function parseReady(text: string): ReadyInfo {
  let v: Partial<ReadyInfo>;
  try { v = JSON.parse(text) as Partial<ReadyInfo>; } catch {
    throw new ProviderError("the child's ready.json is not JSON", { details: { step: "ready" } });
  }
  if (typeof v.sshPort !== "number" || typeof v.hostKeyFingerprint !== "string" || typeof v.pid !== "number") {
    throw new ProviderError("the child's ready.json lacks sshPort/hostKeyFingerprint/pid", { details: { step: "ready" } });
  }
  return {
    pid: v.pid, socket: String(v.socket ?? ""), sshHost: String(v.sshHost ?? ""), sshPort: v.sshPort,
    hostKeyFingerprint: v.hostKeyFingerprint, publicKey: String(v.publicKey ?? ""), version: String(v.version ?? ""),
  };
}
