// Installing hsd into a fresh VM over its OpenSSH session: wait out cloud-init
// and the apt/dpkg locks (seed lesson 7) while the bundle streams into a staging
// dir, then in one round trip swap it in, make sure a node >= 20 is there, write
// the config and unit, (re)start the service and wait for its ready.json: four
// round trips when nothing needs waiting for, the checks' two beside the copy.
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

export { GuestSsh, sshKeyFingerprint } from "./guest-ssh.js";

/** Where things go on the child; every path is absolute on the child. */
export interface GuestPaths {
  /** The unpacked bundle (dist/, node_modules/, bin/). */
  readonly installDir: string;
  /** Where the `hsd` and `hsctl` launchers go (the unit runs <binDir>/hsd). */
  readonly binDir: string;
  readonly configPath: string;
  readonly unitPath: string;
  /** What the child hsd writes once serving (<state root>/run/ready.json). */
  readonly readyFile: string;
}

/** The system layout `hsd run` (no --root) uses, under `root` ("" = the real /). */
export function guestPaths(root = ""): GuestPaths {
  return {
    installDir: `${root}/opt/hsd`,
    binDir: `${root}/usr/local/bin`,
    configPath: `${root}/etc/homestak/hsd.yaml`,
    unitPath: `${root}/etc/systemd/system/hsd.service`,
    readyFile: `${root}/var/lib/hsd/run/ready.json`,
  };
}

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
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const firstLine = (s: string) => s.trim().split("\n")[0] ?? "";
export const MIN_NODE_MAJOR = 20;

/** Runs the whole install; resolves with the child's ready.json. */
export async function bootstrapHsd(ssh: GuestSsh, o: BootstrapOptions): Promise<ReadyInfo> {
  const sleep = o.sleep ?? defaultSleep;
  const env = o.pathPrefix ? `PATH=${q(o.pathPrefix)}:"$PATH" ` : "";
  const cmdMs = o.commandTimeoutMs ?? 60_000;
  const p = o.paths;
  const run: Run = (cmd, timeoutMs = cmdMs, stdin, signal = o.signal) => ssh.exec(`${env}sh -c ${q(cmd)}`, { timeoutMs, stdin, signal });

  const dir = q(p.installDir);
  const next = q(`${p.installDir}.next`);
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

  // The rest in one round trip, the steps numbered by exit code (an SSH session costs a
  // channel, a fork and a login shell on the child, each time), config on stdin:
  // the staged bundle swapped in, so a re-install never mixes versions; a node for it;
  // then the config, launchers and unit, written once the new bundle is in place (a new
  // config never sits beside an old bundle systemd might restart); then the start.
  // Directories 0755 as systemd's ConfigurationDirectory= expects (else it warns on every start); files by mode.
  // No subshell and no $(dirname): each is a fork on the child, and a directory that is there needs no mkdir.
  const put = (path: string, mode: string, text: string | undefined) => {
    const tmp = q(`${path}.tmp`);
    const dir = q(path.slice(0, path.lastIndexOf("/")) || "/");
    const fill = text === undefined ? `cat > ${tmp}` : `printf '%s' ${q(text)} > ${tmp}`;
    return `umask 022 && { [ -d ${dir} ] || mkdir -p ${dir}; } && umask 077 && ${fill} && chmod ${mode} ${tmp} && mv ${tmp} ${q(path)}`;
  };
  // Launchers that work whether node came with the bundle or from the child.
  const launcher = (cmd: string) => `#!/bin/sh\nexec ${p.installDir}/bin/node ${p.installDir}/bin/${cmd}.js "$@"\n`;
  // The config comes on stdin (never a command line); the launchers and the unit, no secrets, in the script.
  const files = [
    { path: p.configPath, mode: "600", text: undefined },
    { path: `${p.binDir}/hsd`, mode: "755", text: launcher("hsd") },
    { path: `${p.binDir}/hsctl`, mode: "755", text: launcher("hsctl") },
    { path: p.unitPath, mode: "644", text: o.unitText },
  ];
  const readyMs = o.readyTimeoutMs ?? 120_000;
  const readyS = Math.max(1, Math.ceil(readyMs / 1000));
  o.log("starting the child's hsd and waiting for it to report ready");
  // A stale ready.json (earlier install) must not be mistaken for the new daemon's.
  // At most one reload, for a unit systemd had loaded before: `enable` would reload again (--no-reload).
  // restart, not `enable --now`: a re-install must run the new bundle and config; with
  // Type=notify it returns once hsd is up, so it shares the readiness bound. Then one
  // remote loop instead of a command per poll: the file every 20 ms (a test and a sleep;
  // under systemd it is there at once), the unit's state every 0.2 s (a failed unit ends
  // it, 3); `timeout` bounds it on the child, the exec timeout bounds it here.
  const f = q(p.readyFile);
  const started = await run([
    `cd / && rm -rf ${dir} && mv ${next} ${dir} || exit 11`,
    // The unit runs <installDir>/bin/node: the bundled binary (--with-node) or the child's own (13: none, 14: too old).
    `if [ ! -x ${dir}/bin/node ]; then`,
    `  n=$(command -v node) || exit 13`,
    // --version answers before node sets up V8: a ~40 ms start saved; "v20.11.1" -> 20.
    `  v=$("$n" --version) || exit 13`,
    `  v=\${v#v}; v=\${v%%.*}`,
    `  [ "$v" -ge ${MIN_NODE_MAJOR} ] || exit 14`,
    `  mkdir -p ${dir}/bin && ln -sf "$n" ${dir}/bin/node || exit 12`,
    `fi`,
    ...files.map((file, i) => `${put(file.path, file.mode, file.text)} || exit ${20 + i}`),
    `umask 022`,
    `rm -f ${f} || exit 30`,
    // systemd loads a unit when it is first referenced (systemd.unit(5)): a fresh VM's hsd.service
    // needs no reload, which re-runs every generator and rereads every unit (slow on a PVE node).
    // A unit loaded before whose file changed (a re-install), or one kept as not found, gets one.
    `case "$(systemctl show -p LoadState -p NeedDaemonReload hsd 2>/dev/null)" in`,
    `  *LoadState=loaded*NeedDaemonReload=no*|*NeedDaemonReload=no*LoadState=loaded*) ;;`,
    `  *) systemctl daemon-reload || exit 31 ;;`,
    `esac`,
    `systemctl enable --no-reload hsd || exit 32`,
    `systemctl restart hsd || exit 33`,
    `timeout ${readyS} sh -c 'i=0; until [ -s "$0" ]; do [ $((i % 10)) -eq 0 ] && systemctl is-failed --quiet hsd && exit 3; i=$((i + 1)); sleep 0.02; done' ${f}`,
    `rc=$?; [ $rc -eq 0 ] && cat ${f}; exit $rc`,
  ].join("\n"), 2 * readyMs + 10_000, o.configYaml);
  if (started.code === 11) {
    throw new ProviderError(`bundle unpack failed on the child (exit 11): ${firstLine(started.stderr)}`, { details: { step: "bundle unpack", exitCode: 11 } });
  }
  if (started.code === 13 || started.code === 14) {
    throw new ProviderError(`the child has no node >= ${MIN_NODE_MAJOR} and the bundle carries none`, {
      details: { step: "node", hint: STEP_HINTS.childHasNoNode },
    });
  }
  if (started.code === 12) throw new ProviderError(`checking node on the child failed (exit 12): ${firstLine(started.stderr)}`, { details: { step: "node" } });
  if (started.code >= 20 && started.code < 20 + files.length) {
    const what = files[started.code - 20]!.path;
    throw new ProviderError(`write ${what} failed on the child (exit ${started.code}): ${firstLine(started.stderr)}`, { details: { step: `write ${what}`, exitCode: started.code } });
  }
  const step = ["clear ready.json", "systemctl daemon-reload", "systemctl enable hsd"][started.code - 30];
  if (step) throw new ProviderError(`${step} failed on the child (exit ${started.code}): ${firstLine(started.stderr)}`, { details: { step, exitCode: started.code } });
  if (started.code === 33) {
    throw new ProviderError(`the child's hsd service did not start: ${firstLine(started.stderr)}`, {
      details: { step: "start", exitCode: started.code, hint: STEP_HINTS.childHsdLog },
    });
  }
  if (started.code === 124) {
    throw new CommandTimeoutError(`the child's hsd did not report ready within ${readyMs} ms`, {
      details: { step: "ready", hint: STEP_HINTS.childHsdStatus },
    });
  }
  if (started.code === 3) {
    throw new ProviderError("the child's hsd service failed before it was ready", {
      details: { step: "ready", hint: STEP_HINTS.childHsdLog },
    });
  }
  if (started.code !== 0) throw new ProviderError(`waiting for the child's ready.json failed (exit ${started.code}): ${firstLine(started.stderr)}`, { details: { step: "ready" } });
  const ready = parseReady(started.stdout);
  o.log(`hsd ${ready.version} is running on the child (ssh port ${ready.sshPort})`);
  return ready;
}

type Run = (cmd: string, timeoutMs?: number, stdin?: Buffer | string, signal?: AbortSignal) => Promise<CommandResult>;

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
