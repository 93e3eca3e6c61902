// Installing hsd into a fresh VM over its OpenSSH session: wait out cloud-init
// and the apt/dpkg locks (seed lesson 7), copy and unpack the bundle, make sure
// a node >= 20 is there, write the config and unit, (re)start the service and
// wait for its ready.json. Config and bundle travel on stdin, never in a
// command line.
// Imported by: src/providers/pve.

import { AptLockedError, CommandTimeoutError, ProviderError } from "../../domain/errors.js";
import { waitForCloudInit } from "./cloud-init-wait.js";
import { HSD_NODE_FLAGS } from "../../config/node-flags.js";
import { withTimeout } from "../../util/timeout.js";
import type { ReadyInfo } from "../../util/ready-pipe.js";
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
  const run = (cmd: string, timeoutMs = cmdMs, stdin?: Buffer | string) => ssh.exec(`${env}sh -c ${q(cmd)}`, { timeoutMs, stdin, signal: o.signal });
  const must = async (what: string, cmd: string, timeoutMs?: number, stdin?: Buffer | string) => {
    const r = await run(cmd, timeoutMs, stdin);
    if (r.code !== 0) throw new ProviderError(`${what} failed on the child (exit ${r.code}): ${firstLine(r.stderr)}`, { details: { step: what, exitCode: r.code } });
    return r;
  };

  await waitForCloudInit(run, o, cmdMs);

  await run("systemctl stop apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service");
  const lockMs = o.aptLockTimeoutMs ?? 300_000;
  const locks = "/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock";
  let holders = "";
  const t0 = Date.now();
  await withTimeout(lockMs, () => new AptLockedError(`apt/dpkg lock still held after ${lockMs} ms (by ${holders || "?"})`, {
    details: { step: "apt-lock", holders, waitedMs: Date.now() - t0 },
  }), async (signal) => {
    for (let said = false; ;) {
      // fuser exits 1 when no process holds any of them; the holders' names are for the operator.
      const r = await run(`p=$(fuser ${locks} 2>/dev/null) || exit 1; ps -o comm= -p "$(echo $p | tr -s ' ' ',')" 2>/dev/null | sort -u | tr '\\n' ' '`);
      if (r.code !== 0) return;
      holders = r.stdout.trim();
      if (!said) o.log(`waiting for apt/dpkg to release its lock (held by ${holders || "?"})`);
      said = true;
      await sleep(o.pollMs ?? 2000, signal);
    }
  }, o.signal);
  if (holders) o.log("apt/dpkg lock released");

  o.log(`copying the hsd bundle (${o.bundle.length} bytes)`);
  // Unpacked beside the old install and swapped in, so a re-install never mixes versions.
  const dir = q(p.installDir);
  const next = q(`${p.installDir}.next`);
  const copyMs = o.copyTimeoutMs ?? 300_000;
  await must("bundle copy", `rm -rf ${next} && mkdir -p ${next} && cat > ${next}/.bundle.tgz`, copyMs, o.bundle);
  // The bundle stays in the install as hsd-bundle.tar.gz: the child installs its own children from it.
  await must("bundle unpack", `cd ${next} && tar -xzf .bundle.tgz && mv .bundle.tgz hsd-bundle.tar.gz && rm -rf ${dir} && mv ${next} ${dir}`, copyMs);
  // The unit runs <installDir>/bin/node: the bundled binary (--with-node) or the child's own.
  const node = await run([
    `[ -x ${dir}/bin/node ] && exit 0`,
    `n=$(command -v node) || exit 3`,
    `v=$("$n" -p 'process.versions.node.split(".")[0]') || exit 3`,
    `[ "$v" -ge ${MIN_NODE_MAJOR} ] || exit 4`,
    `mkdir -p ${dir}/bin && ln -sf "$n" ${dir}/bin/node`,
  ].join("\n"));
  if (node.code === 3 || node.code === 4) {
    throw new ProviderError(`the child has no node >= ${MIN_NODE_MAJOR} and the bundle carries none`, {
      details: { step: "node", hint: STEP_HINTS.childHasNoNode },
    });
  }
  if (node.code !== 0) throw new ProviderError(`checking node on the child failed (exit ${node.code}): ${firstLine(node.stderr)}`, { details: { step: "node" } });

  // Directories 0755 as systemd's ConfigurationDirectory= expects (else it warns on every start); files by mode.
  const put = (path: string, mode: string, text: string) =>
    must(`write ${path}`, `(umask 022; mkdir -p "$(dirname ${q(path)})") && umask 077 && cat > ${q(path)}.tmp && chmod ${mode} ${q(path)}.tmp && mv ${q(path)}.tmp ${q(path)}`, cmdMs, text);
  // Launchers that work whether node came with the bundle or from the child.
  for (const cmd of ["hsd", "hsctl"]) {
    await put(`${p.binDir}/${cmd}`, "755", `#!/bin/sh\nexec ${p.installDir}/bin/node ${cmd === "hsd" ? `${HSD_NODE_FLAGS.join(" ")} ` : ""}${p.installDir}/bin/${cmd}.js "$@"\n`);
  }
  await put(p.configPath, "600", o.configYaml);
  await put(p.unitPath, "644", o.unitText);
  // A stale ready.json (earlier install) must not be mistaken for the new daemon's.
  await must("clear ready.json", `rm -f ${q(p.readyFile)}`);
  await must("systemctl daemon-reload", "systemctl daemon-reload");
  await must("systemctl enable hsd", "systemctl enable hsd");
  const readyMs = o.readyTimeoutMs ?? 120_000;
  // restart, not `enable --now`: a re-install must run the new bundle and config.
  // With Type=notify it returns once hsd is up, so it shares the readiness bound.
  const restart = await run("systemctl restart hsd", readyMs + 10_000);
  if (restart.code !== 0) {
    throw new ProviderError(`the child's hsd service did not start (exit ${restart.code}): ${firstLine(restart.stderr)}`, {
      details: { step: "start", exitCode: restart.code, hint: STEP_HINTS.childHsdLog },
    });
  }

  const readyS = Math.max(1, Math.ceil(readyMs / 1000));
  o.log("waiting for the child's hsd to report ready");
  // One remote loop (0.1 s) instead of a command per poll; `timeout` bounds it on the child,
  // the exec timeout bounds it here; a failed unit ends it at once.
  const wait = await run([
    `f=${q(p.readyFile)}`,
    `timeout ${readyS} sh -c 'until [ -s "$0" ]; do systemctl is-failed --quiet hsd && exit 3; sleep 0.1; done' "$f"`,
    `rc=$?; [ $rc -eq 0 ] && cat "$f"; exit $rc`,
  ].join("\n"), readyMs + 10_000);
  if (wait.code === 124) {
    throw new CommandTimeoutError(`the child's hsd did not report ready within ${readyMs} ms`, {
      details: { step: "ready", hint: STEP_HINTS.childHsdStatus },
    });
  }
  if (wait.code === 3) {
    throw new ProviderError("the child's hsd service failed before it was ready", {
      details: { step: "ready", hint: STEP_HINTS.childHsdLog },
    });
  }
  if (wait.code !== 0) throw new ProviderError(`waiting for the child's ready.json failed (exit ${wait.code}): ${firstLine(wait.stderr)}`, { details: { step: "ready" } });
  const ready = parseReady(wait.stdout);
  o.log(`hsd ${ready.version} is running on the child (ssh port ${ready.sshPort})`);
  return ready;
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
