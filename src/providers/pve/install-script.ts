// The shell that puts a staged hsd bundle in place on a child and enables its
// service: the same lines whether the parent runs them over SSH (ssh-bootstrap.ts)
// or the child runs them from its boot CD during its first boot (boot-cd.ts).
// Steps are numbered by exit code; describeInstallExit names them.
// Imported by: src/providers/pve.

import { ProviderError } from "../../domain/errors.js";
import { STEP_HINTS } from "../../domain/hints.js";

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

/** Single-quotes a string for sh. */
export const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const q = shellQuote;
export const MIN_NODE_MAJOR = 20;
/** The installed bundle's sha256 (hex), beside it: how a parent tells the bundle a boot CD installed. */
export const BUNDLE_SHA_FILE = ".bundle-sha256";

/**
 * From a bundle unpacked in <installDir>.next to an enabled hsd.service whose
 * config is in place and whose ready.json is cleared, not yet started.
 * `config`: a shell command whose output is the config (`cat` for stdin).
 */
export function installLines(o: { paths: GuestPaths; unitText: string; config: string }): string[] {
  const p = o.paths;
  const dir = q(p.installDir);
  const next = q(`${p.installDir}.next`);
  // Directories 0755 as systemd's ConfigurationDirectory= expects (else it warns on every start); files by mode.
  // No subshell and no $(dirname): each is a fork on the child, and a directory that is there needs no mkdir.
  const put = (path: string, mode: string, fill: string) => {
    const tmp = q(`${path}.tmp`);
    const d = q(path.slice(0, path.lastIndexOf("/")) || "/");
    return `umask 022 && { [ -d ${d} ] || mkdir -p ${d}; } && umask 077 && ${fill} > ${tmp} && chmod ${mode} ${tmp} && mv ${tmp} ${q(path)}`;
  };
  const text = (t: string) => `printf '%s' ${q(t)}`;
  // Launchers that work whether node came with the bundle or from the child.
  const launcher = (cmd: string) => `#!/bin/sh\nexec ${p.installDir}/bin/node ${p.installDir}/bin/${cmd}.js "$@"\n`;
  // The config from its source (never a command line); the launchers and the unit, no secrets, in the script.
  const files = [
    { path: p.configPath, mode: "600", fill: o.config },
    { path: `${p.binDir}/hsd`, mode: "755", fill: text(launcher("hsd")) },
    { path: `${p.binDir}/hsctl`, mode: "755", fill: text(launcher("hsctl")) },
    { path: p.unitPath, mode: "644", fill: text(o.unitText) },
  ];
  return [
    // The staged bundle swapped in, so a re-install never mixes versions; a node for it;
    // then the config, launchers and unit, written once the new bundle is in place (a new
    // config never sits beside an old bundle systemd might restart).
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
    ...files.map((file, i) => `${put(file.path, file.mode, file.fill)} || exit ${20 + i}`),
    `umask 022`,
    // A stale ready.json (earlier install) must not be mistaken for the new daemon's.
    `rm -f ${q(p.readyFile)} || exit 30`,
    // systemd loads a unit when it is first referenced (systemd.unit(5)): a fresh VM's hsd.service
    // needs no reload, which re-runs every generator and rereads every unit (slow on a PVE node).
    // A unit loaded before whose file changed (a re-install), or one kept as not found, gets one.
    // At most one reload: `enable` would reload again (--no-reload).
    `case "$(systemctl show -p LoadState -p NeedDaemonReload hsd 2>/dev/null)" in`,
    `  *LoadState=loaded*NeedDaemonReload=no*|*NeedDaemonReload=no*LoadState=loaded*) ;;`,
    `  *) systemctl daemon-reload || exit 31 ;;`,
    `esac`,
    `systemctl enable --no-reload hsd || exit 32`,
  ];
}

/** The paths installLines writes, by exit code 20 + i. */
const FILE_STEPS = (p: GuestPaths) => [p.configPath, `${p.binDir}/hsd`, `${p.binDir}/hsctl`, p.unitPath];

/** The typed error for an installLines exit code; undefined for codes it does not use. */
export function installLinesError(code: number, stderr: string, paths: GuestPaths): ProviderError | undefined {
  const first = stderr.trim().split("\n")[0] ?? "";
  if (code === 11) return new ProviderError(`bundle unpack failed on the child (exit 11): ${first}`, { details: { step: "bundle unpack", exitCode: 11 } });
  if (code === 13 || code === 14) {
    return new ProviderError(`the child has no node >= ${MIN_NODE_MAJOR} and the bundle carries none`, {
      details: { step: "node", hint: STEP_HINTS.childHasNoNode },
    });
  }
  if (code === 12) return new ProviderError(`checking node on the child failed (exit 12): ${first}`, { details: { step: "node" } });
  const files = FILE_STEPS(paths);
  if (code >= 20 && code < 20 + files.length) {
    const what = files[code - 20]!;
    return new ProviderError(`write ${what} failed on the child (exit ${code}): ${first}`, { details: { step: `write ${what}`, exitCode: code } });
  }
  const step = ["clear ready.json", "systemctl daemon-reload", "systemctl enable hsd"][code - 30];
  if (step) return new ProviderError(`${step} failed on the child (exit ${code}): ${first}`, { details: { step, exitCode: code } });
  return undefined;
}
