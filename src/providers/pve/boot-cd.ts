// hsd's boot CD: a small ISO per child VM holding the hsd bundle, the child's
// config and a script that installs and starts hsd, which cloud-init's runcmd runs
// on the VM's first boot, before it enables the guest agent. The child's hsd then
// starts while the parent still waits for the agent, and the install phase only
// checks what it finds (install-child.ts). Anything missing or different there is
// installed over SSH as before, so the CD is a head start, never a requirement.
// Imported by: src/providers/pve.

import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CommandRunner } from "../../util/command-runner.js";
import { ProviderError } from "../../domain/errors.js";
import { BUNDLE_SHA_FILE, installLines, shellQuote as q, type GuestPaths } from "./install-script.js";

/**
 * What the config on the CD says for ssh.advertise_host until the child knows its
 * address (the boot script puts in the one it reaches its parent from). A plain
 * YAML scalar, as an IPv4 address is: the filled-in file is byte for byte the
 * config the parent would write for that address.
 */
export const ADDRESS_PLACEHOLDER = "hsd-boot-address.invalid";

/** The CD's files: the boot script, the bundle, its sha256 and the config. */
const SCRIPT = "boot-install.sh";
const BUNDLE = "hsd-bundle.tar.gz";
const BUNDLE_SHA = "bundle.sha256";
const CONFIG = "hsd.yaml";

export interface BootCd {
  /** The ISO's file name in the storage's iso directory (hsd-<vmid>.iso). */
  readonly file: string;
  readonly path: string;
  /** Its volume label, unique per CD (what the runcmd line mounts). */
  readonly label: string;
}

/**
 * The script cloud-init runs from the mounted CD ($0 is on it). It never fails
 * the boot: whatever it could not do, it says (cloud-init logs it), and the
 * parent's install does over SSH.
 */
export function bootScript(o: { paths: GuestPaths; unitText: string; parentHost: string }): string {
  const p = o.paths;
  const next = q(`${p.installDir}.next`);
  const placeholder = ADDRESS_PLACEHOLDER.replace(/\./g, "\\.");
  return [
    "#!/bin/sh",
    "# hsd's install from its boot CD, run once by cloud-init on this VM's first boot.",
    "# Written by the parent's hsd (pve provider); its install phase checks the result.",
    `d=$(cd "$(dirname "$0")" && pwd)`,
    // Its output goes where cloud-init keeps runcmd's (/var/log/cloud-init-output.log).
    `echo "hsd boot install from $d"`,
    // The address this VM reaches its parent from is the one the parent reaches it at.
    `t=${q(o.parentHost)}`,
    `case "$t" in *[!0-9a-fA-F.:]*) t=$(getent ahosts "$t" | awk 'NR==1{print $1}') ;; esac`,
    `a=$(ip -o route get "$t" 2>/dev/null | sed -n 's/.* src \\([^ ]*\\).*/\\1/p')`,
    `[ -n "$a" ] || { echo "no route to the parent ($t): not installed"; exit 0; }`,
    "(",
    `  rm -rf ${next} && mkdir -p ${next} && tar -xzf "$d/${BUNDLE}" -C ${next} && cp "$d/${BUNDLE}" ${next}/${BUNDLE} && cp "$d/${BUNDLE_SHA}" ${next}/${BUNDLE_SHA_FILE} || exit 10`,
    ...installLines({ paths: p, unitText: o.unitText, config: `sed "s/${placeholder}/$a/" "$d/${CONFIG}"` }).map((l) => `  ${l}`),
    // --no-block: the runcmd goes on (to the guest agent) while hsd starts.
    "  systemctl start --no-block hsd || exit 33",
    ")",
    `echo "hsd boot install: exit $? (address $a)"`,
    "exit 0",
    "",
  ].join("\n");
}

/** cloud-init runcmd item that mounts the CD by its label and runs its script; it never fails the runcmd. */
export function bootRuncmd(label: string): string[] {
  return ["sh", "-c", `d=/run/hsd-boot; mkdir -p $d && mount -o ro LABEL=${label} $d && sh $d/${SCRIPT}; umount $d 2>/dev/null; exit 0`];
}

/**
 * Writes the VM's boot CD into `isoDir` (temp name, then renamed: PVE lists only
 * *.iso there), mode 0600. genisoimage (qemu-server uses it for PVE's own
 * cloud-init drives) builds it; the bundle goes in by reference, not copied.
 */
export async function writeBootCd(o: {
  readonly isoDir: string; readonly vmid: number; readonly bundlePath: string; readonly bundleSha256: string;
  readonly configYaml: string; readonly script: string; readonly commands: CommandRunner; readonly signal: AbortSignal;
}): Promise<BootCd> {
  const file = `hsd-${o.vmid}.iso`;
  const path = join(o.isoDir, file);
  const label = `hsd-${o.vmid}-${randomBytes(4).toString("hex")}`;
  const stage = await mkdtemp(join(tmpdir(), "hsd-boot-cd-"));
  const tmp = join(o.isoDir, `.${file}.tmp`);
  try {
    await writeFile(join(stage, SCRIPT), o.script, { mode: 0o755 });
    await writeFile(join(stage, CONFIG), o.configYaml, { mode: 0o600 });
    await writeFile(join(stage, BUNDLE_SHA), `${o.bundleSha256}\n`);
    const r = await o.commands(["genisoimage", "-quiet", "-r", "-V", label, "-o", tmp, "-graft-points",
      `${SCRIPT}=${join(stage, SCRIPT)}`, `${CONFIG}=${join(stage, CONFIG)}`, `${BUNDLE_SHA}=${join(stage, BUNDLE_SHA)}`, `${BUNDLE}=${o.bundlePath}`,
    ], { timeoutMs: 120_000, signal: o.signal });
    if (r.code !== 0) {
      throw new ProviderError(r.code === 127 ? "genisoimage is not installed" : `genisoimage exited ${r.code}: ${r.stderr.trim().split("\n")[0] ?? ""}`, {
        details: { step: "boot cd", exitCode: r.code },
      });
    }
    await chmod(tmp, 0o600);
    await rename(tmp, path);
    return { file, path, label };
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
