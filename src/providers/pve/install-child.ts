// The pve provider's install phase: over the VM's own OpenSSH (root, this
// level's private key) find the hsd the VM's boot CD started, or put the hsd
// bundle, its config and unit on the child and start the service; return the
// endpoint from the child's ready.json.
// Imported by: src/providers/pve.

import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { sha256File } from "../../images/image-digest.js";
import { packageRoot } from "../../util/package-root.js";
import { childImageValue, type PveConfig } from "./pve-config.js";
import { ProviderError } from "../../domain/errors.js";
import { childConfigYaml } from "../child-config.js";
import type { ChildEndpoint, ChildHandle, ChildInstallSpec, PhaseContext } from "../provider.js";
import { readyEndpoint } from "../provider.js";
import { GuestSsh } from "./guest-ssh.js";
import { bootstrapHsd, guestPaths } from "./ssh-bootstrap.js";
import type { Sleep } from "./pve-client.js";
import { STEP_HINTS } from "../../domain/hints.js";

/** The package root (…/dist/providers/pve/ -> …/), where the bundle and daemon/ live. */

export interface InstallOptions {
  /** This level's private key (text) or its path; the VM authorizes its public half via cloud-init. */
  readonly sshPrivateKey?: string | Buffer;
  readonly sshPrivateKeyPath?: string;
  /** scripts/bundle.mjs output. Default <package root>/hsd-bundle.tar.gz. */
  readonly bundlePath?: string;
  /** The systemd unit to install. Default <package root>/daemon/hsd.service, else DEFAULT_UNIT. */
  readonly unitFile?: string;
  /** The child hsd's SSH endpoint port. Default 2222 (stable across VM reboots). */
  readonly childSshPort?: number;
  /**
   * Test seam: how this level reaches a VM (its sshd, and then its hsd endpoint)
   * and where the VM's "/" is. Default { host: address, port: 22, root: "" }.
   * The simulator maps its fake guest addresses to a per-VM sshd on 127.0.0.1
   * and a per-VM root directory (test/pve-sim/sim-guest.ts).
   */
  readonly guestAccess?: (vm: { vmid: number; address: string }) => GuestAccess | Promise<GuestAccess>;
  /** Bounds inside the phase budget (ctx.signal still wins). */
  readonly sshWaitMs?: number;
  readonly cloudInitTimeoutMs?: number;
  readonly aptLockTimeoutMs?: number;
  readonly readyTimeoutMs?: number;
  readonly commandTimeoutMs?: number;
  readonly pollMs?: number;
}

export interface GuestAccess {
  readonly host: string;
  readonly port: number;
  /** Prefix for every path on the VM ("" = the real /). */
  readonly root: string;
}

/** Used when the package has no daemon/hsd.service. The install writes /usr/local/bin/hsd. */
export const DEFAULT_UNIT = `[Unit]
Description=homestak recursive nesting daemon (hsd)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/local/bin/hsd run
Restart=on-failure
RestartSec=2
WatchdogSec=30s
KillMode=mixed
TimeoutStopSec=10s
# 78: invalid config (EX_CONFIG); restarting cannot help.
RestartPreventExitStatus=78
StateDirectory=hsd
RuntimeDirectory=hsd
RuntimeDirectoryMode=0700

[Install]
WantedBy=multi-user.target
`;

/** A PVE node name / hostname for a level name. */
export function guestHostname(level: string): string {
  return level.toLowerCase().replace(/[^a-z0-9-]/g, "-").replace(/^-+|-+$/g, "").slice(0, 63) || "hsd";
}

/**
 * The child's pve.image (what its configure step makes pve.template from): the
 * rest of this level's list (pve.image given per depth), else this level's
 * image; unless the child does not hold it (a manifest child is passed only
 * its subtree's images), then the first image it holds.
 */
export function childPveImage(own: string | readonly string[], childImages: unknown): string | readonly string[] {
  const held = Object.keys(typeof childImages === "object" && childImages !== null ? childImages : {}).sort();
  const first = typeof own === "string" ? own : own[0]!;
  return held.length === 0 || held.includes(first) ? own : held[0]!;
}

/** The bundle a child gets: InstallOptions.bundlePath, else the package's own. */
export function bundlePathOf(o: InstallOptions): string {
  return o.bundlePath ?? `${packageRoot()}hsd-bundle.tar.gz`;
}

/** The unit a child gets: InstallOptions.unitFile, else the package's, else DEFAULT_UNIT. */
export function unitTextOf(o: InstallOptions): Promise<string> {
  return readFile(o.unitFile ?? `${packageRoot()}daemon/hsd.service`, "utf8").catch(() => DEFAULT_UNIT);
}

/** sha256 of a bundle, hashed once per file version (path, size, mtime). */
const shaMemo = new Map<string, Promise<string>>();
export async function bundleSha256Of(path: string): Promise<string> {
  const st = await stat(path);
  const key = `${path}\0${st.size}\0${st.mtimeMs}`;
  let p = shaMemo.get(key);
  if (!p) {
    p = sha256File(path);
    p.catch(() => shaMemo.delete(key));
    shaMemo.set(key, p);
  }
  return p;
}

/**
 * The hsd.yaml of a PVE child at `address`. The child will be a PVE node too: its own
 * API on itself, the parent's choices for the rest (spec.extraConfig.pve, when given, wins).
 */
export function childPveConfig(config: PveConfig, spec: ChildInstallSpec, address: string, childSshPort = 2222): string {
  const childPve = {
    url: "https://127.0.0.1:8006", node: guestHostname(spec.name), token_id: config.tokenId, fingerprint: "",
    storage: config.storage, snippet_storage: config.snippetStorage, template: config.template,
    bridge: config.bridge, cores: config.cores, memory: config.memoryMiB, image: childPveImage(childImageValue(config), spec.extraConfig.images),
  };
  return childConfigYaml({ ...spec, extraConfig: { pve: childPve, ...spec.extraConfig } },
    { sshHost: "0.0.0.0", advertiseHost: address, parentHost: spec.parentHost }, { provider: "pve" }, childSshPort);
}

export interface InstallDeps {
  readonly options: InstallOptions;
  readonly config: PveConfig;
  readonly connectTimeoutMs?: number;
  readonly sleep: Sleep;
}

export async function installChild(d: InstallDeps, child: ChildHandle, spec: ChildInstallSpec, ctx: PhaseContext): Promise<{ handle: ChildHandle; endpoint: ChildEndpoint }> {
  const o = d.options;
  const vmid = Number(child.data.vmid);
  const address = typeof child.data.address === "string" ? child.data.address : "";
  if (!address) throw new ProviderError(`VM ${vmid} has no address: boot it first`, { details: { name: child.name, vmid } });
  const privateKey = o.sshPrivateKey ?? (o.sshPrivateKeyPath ? await readFile(o.sshPrivateKeyPath) : undefined);
  if (!privateKey) {
    throw new ProviderError("the pve provider has no SSH private key to install with", {
      details: { hint: STEP_HINTS.noSshKeyWired },
    });
  }
  const bundlePath = bundlePathOf(o);
  const bundle = await readFile(bundlePath).catch((e: NodeJS.ErrnoException) => {
    throw new ProviderError(`no hsd bundle at ${bundlePath} (${e.code ?? e.message})`, {
      details: { hint: STEP_HINTS.noBundle },
    });
  });
  const unitText = await unitTextOf(o);

  const target = await (o.guestAccess ?? ((vm) => ({ host: vm.address, port: 22, root: "" })))({ vmid, address });
  const pinned = typeof child.data.sshHostKey === "string" ? child.data.sshHostKey : undefined;
  const log = (message: string) => ctx.emit({ kind: "log", message });
  log(`connecting to ${target.host}:${target.port} as root`);
  const ssh = await GuestSsh.waitFor({
    host: target.host, port: target.port, privateKey, hostKeyFingerprint: pinned,
    connectTimeoutMs: d.connectTimeoutMs, waitMs: o.sshWaitMs ?? 180_000, signal: ctx.signal, sleep: d.sleep,
    onRetry: (e) => log(`VM ${vmid} sshd not ready yet (${e.code})`),
  });
  try {
    const yaml = childPveConfig(d.config, spec, address, o.childSshPort);
    // A boot CD (boot-cd.ts) may have started hsd already: what it installed must be this
    // level's bundle and this very config, else the install goes on as if it had not run.
    const booted = typeof child.data.bootCd === "string"
      ? { bundleSha256: await bundleSha256Of(bundlePath), configSha256: createHash("sha256").update(yaml).digest("hex") }
      : undefined;
    const ready = await bootstrapHsd(ssh, {
      bundle, paths: guestPaths(target.root), configYaml: yaml, unitText, booted,
      cloudInitTimeoutMs: o.cloudInitTimeoutMs, aptLockTimeoutMs: o.aptLockTimeoutMs, readyTimeoutMs: o.readyTimeoutMs,
      commandTimeoutMs: o.commandTimeoutMs, pollMs: o.pollMs, sleep: d.sleep, signal: ctx.signal, log,
    });
    if (!ready.sshPort || !ready.hostKeyFingerprint) {
      throw new ProviderError("the child's hsd is up but serves no SSH endpoint", { details: { step: "ready", sshPort: ready.sshPort } });
    }
    return {
      handle: { name: child.name, data: { ...child.data, sshHostKey: ssh.hostKeyFingerprint } },
      endpoint: readyEndpoint(target.host, ready),
    };
  } finally {
    ssh.close();
  }
}
