// What a child VM boots with, written on this node while its clone task runs: its
// cloud-init snippet and, for a child that will run hsd, its boot CD (boot-cd.ts),
// both on pve.snippet_storage. No CD (the storage holds no iso content, the node
// has no genisoimage) is a log line: install then puts hsd on the child over SSH.
// Imported by: src/providers/pve.

import { join } from "node:path";
import { stringify } from "yaml";
import type { ChildInstallSpec } from "../provider.js";
import type { PveConfig } from "./pve-config.js";
import type { PveClient } from "./pve-client.js";
import type { CommandRunner } from "../../util/command-runner.js";
import { ProviderError } from "../../domain/errors.js";
import { STEP_HINTS } from "../../domain/hints.js";
import { writeFileAtomic } from "../../util/atomic-write.js";
import { storageFields } from "./preflight.js";
import { bundlePathOf, bundleSha256Of, childPveConfig, guestHostname, unitTextOf, type InstallOptions } from "./install-child.js";
import { ADDRESS_PLACEHOLDER, bootRuncmd, bootScript, writeBootCd, type BootCd } from "./boot-cd.js";
import { guestPaths } from "./install-script.js";

/** What a VM's user-data is made from; `bootCd`: the label of its boot CD, if it has one (bootRuncmd mounts it). */
export interface UserDataInput { readonly vmid: number; readonly name: string; readonly keys: readonly string[]; readonly bootCd?: string }

function defaultUserData(c: UserDataInput): string {
  // A user snippet replaces PVE's generated user-data, so keys must be here too.
  // hsd's boot CD before the agent: the parent waits for the agent, hsd starts meanwhile.
  return `#cloud-config\n${stringify({
    hostname: guestHostname(c.name), manage_etc_hosts: true, ssh_pwauth: false,
    users: [{ name: "root", ssh_authorized_keys: [...c.keys] }], disable_root: false,
    package_upgrade: false, packages: ["qemu-guest-agent"],
    runcmd: [...(c.bootCd ? [bootRuncmd(c.bootCd)] : []), ["systemctl", "enable", "--now", "qemu-guest-agent"]],
  })}`;
}

export interface BootMediaDeps {
  readonly client: PveClient;
  readonly config: PveConfig;
  readonly options: InstallOptions & { readonly sshPublicKeys: readonly string[]; readonly userData?: (child: UserDataInput) => string };
  readonly commands: CommandRunner;
  readonly vmid: number;
  readonly name: string;
  /** Absent for a leaf: it gets no hsd, so no CD. */
  readonly install?: ChildInstallSpec;
  readonly signal: AbortSignal;
  readonly log: (message: string) => void;
}

/** The snippet (`file` in the storage's snippets/, `path` on this node) and the CD, if the VM gets one. */
export async function writeBootMedia(d: BootMediaDeps): Promise<{ file: string; path: string; cd?: BootCd }> {
  const id = d.config.snippetStorage;
  const s = storageFields(await d.client.api("GET /storage/{storage}", { storage: id }, { signal: d.signal }));
  if (!s.path || !s.content.split(",").includes("snippets")) {
    throw new ProviderError(`storage ${id} cannot hold snippets (content: ${s.content})`, {
      details: { storage: id, hint: STEP_HINTS.noSnippets },
    });
  }
  const cd = d.install ? await writeCd(d, d.install, s.path, s.content) : undefined;
  const file = `hsd-${d.vmid}.yaml`;
  const path = join(s.path, "snippets", file);
  const user = (d.options.userData ?? defaultUserData)({ vmid: d.vmid, name: d.name, keys: d.options.sshPublicKeys, ...(cd ? { bootCd: cd.label } : {}) });
  await writeFileAtomic(path, user, { mode: 0o644 });
  return { file, path, ...(cd ? { cd } : {}) };
}

async function writeCd(d: BootMediaDeps, install: ChildInstallSpec, storagePath: string, content: string): Promise<BootCd | undefined> {
  if (!content.split(",").includes("iso")) {
    d.log(`no boot CD: storage ${d.config.snippetStorage} holds no iso content; hsd will be installed over SSH`);
    return undefined;
  }
  try {
    const bundlePath = bundlePathOf(d.options);
    const [bundleSha256, unitText] = await Promise.all([bundleSha256Of(bundlePath), unitTextOf(d.options)]);
    const cd = await writeBootCd({
      isoDir: join(storagePath, "template", "iso"), vmid: d.vmid, bundlePath, bundleSha256,
      configYaml: childPveConfig(d.config, install, ADDRESS_PLACEHOLDER, d.options.childSshPort),
      script: bootScript({ paths: guestPaths(), unitText, parentHost: install.parentHost }),
      commands: d.commands, signal: d.signal,
    });
    d.log(`boot CD ${cd.file} written: hsd installs itself during the VM's first boot`);
    return cd;
  } catch (e) {
    if (d.signal.aborted) throw e;
    d.log(`no boot CD (${(e as Error).message}); hsd will be installed over SSH`);
    return undefined;
  }
}
