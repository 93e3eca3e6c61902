// Every user-facing hint, one per error code, next to the codes themselves. hsd
// and hsctl print `<message>` then `hint: <hint>`; events carry the hint to the
// operator's terminal. Hints name commands and files, never secret values.
// Imported by: anyone.

import type { ErrorCode } from "./errors.js";

/** Keyed by the closed ErrorCode union: a code without a hint does not compile. */
const HINTS: Readonly<Record<ErrorCode, string>> = {
  ManifestInvalid: "fix each listed node and field of the manifest (site-config defs/manifest.schema.json says what a node may hold), then re-run; nothing was created",
  VmidTaken: "the manifest's vmid is already a VM on that node: remove that VM (qm destroy VMID) or give the node another vmid",
  InvalidArgument: "check the command's --help for accepted values",
  ConfigInvalid: "fix each named line of the config file (see daemon/hsd.example.yaml for every key)",
  DaemonRunning: "an hsd already serves this root; use `hsctl status`, or stop it (systemctl stop hsd / kill its pid from run/ready.json)",
  DaemonStartFailed: "the daemon did not become ready; its log says why",
  DaemonUnreachable: "start one with `hsd run --root DIR` (or `systemctl start hsd`), or point hsctl at it with --socket PATH / --root DIR / HSD_SOCKET",
  RepoNotFound: "list the repo under `repos:` in hsd.yaml, or check the checkout path exists",
  SecretInRepo: "move the file out of the repo (secrets live in secrets.yaml) or add it to .gitignore",
  AccessDenied: "authorize the key on that level: `hsctl access add --role controller KEYFILE`",
  HostKeyMismatch: "the endpoint's host key changed; if that is expected, update parent.host_key_fingerprint",
  ConnectTimeout: "the peer did not answer; check it is up and the address/port are reachable (timeouts.connect)",
  CommandTimeout: "the remote command ran past timeouts.command; check the level's log (hsd.log)",
  PhaseTimeout: "the phase ran past its budget; see the level's log, then re-run (finished phases are skipped) or raise budgets.<phase>",
  DeadlineExceeded: "the call ran past its deadline; the daemon may be busy or wedged, check its log",
  PeerGone: "the other end went away mid-call; check it is still running (hsctl status)",
  QueueTimeout: "too many concurrent fetches; retry, or raise ssh.max_upload_packs",
  GitProtocol: "the git transfer failed; re-run sync, and check the parent's repos with `hsctl status`",
  DirtyWorktree: "commit or stash the local edits in that level's checkout, or re-run with the snapshot ref",
  ProviderFailed: "see the level's hsd.log for the provider's output",
  PveApi: "check the PVE API (pve.url, pve.node) and the task log on the node",
  PveAuth: "check pve.token_id in hsd.yaml and pve.token_secret in secrets.yaml",
  PreflightFailed: "fix what the failed check names, then re-run (`hsctl doctor` runs only the checks)",
  Cancelled: "the operation was cancelled; re-run it to continue (finished phases are skipped)",
  NotImplemented: "this hsd does not support that yet; check `hsctl version` on both ends",
  StateCorrupt: "move the named state file aside and re-run; the level rebuilds its journal",
  DiskFull: "free space under the level's root, then re-run",
  NotFound: "check the name or fingerprint with the matching list command",
  AddressInUse: "another process (an hsd or sshd?) listens there; set another ssh.port in hsd.yaml (0, or unset under --root, picks a free one)",
  Remote: "the remote hsd failed with a code this hsd does not know; compare `hsctl version` on both ends and read the remote level's hsd.log",
  PveFingerprintMismatch: "the PVE API certificate changed; if that is expected, update pve.fingerprint in hsd.yaml (`hsctl doctor` shows the new one)",
  PveNotPinned: "set pve.fingerprint in hsd.yaml to the API certificate's SHA256 fingerprint (pvenode cert info on the node)",
  PveProxy: "pveproxy gave up on the call (595/596/597); check pveproxy on the node (systemctl status pveproxy) and re-run",
  PveUnreachable: "check pve.url in hsd.yaml and that pveproxy listens on the node (port 8006)",
  PveTaskFailed: "read the task log on the node (Datacenter > Tasks, or pvesh get /nodes/NODE/tasks/UPID/log)",
  CommandFailed: "the command's output is in the level's hsd.log; run it by hand on that level to see why it fails",
  Netns: "run as root with iproute2 installed, or use --isolation process",
  PveTokenExists: "remove the stale token (pveum user token remove USER ID) or put its secret in secrets.yaml as pve.token_secret",
  SecretsEncrypted: "give the level-0 hsd the operator's age identity (SOPS_AGE_KEY_FILE, or ~/.config/sops/age/keys.txt) and install `age`; or decrypt it in the site-config checkout with homestak's `make decrypt` (secrets.yaml is gitignored, 0600)",
  StepFailed: "the step's last lines are above; fix it (at level 0, then `hsctl sync`), and re-run: finished steps are skipped",
  ImageNotFound: "list the image under `images:` in level 0's hsd.yaml, with a file at its path (default /var/lib/vz/template/iso/<name>.img)",
  ImageChecksumMismatch: "the image changed or was damaged in transit: re-run (the bad partial file was removed); if the file at level 0 is right, fix or drop its sha256 in hsd.yaml",
  ImageTransfer: "the image transfer was cut or malformed; re-run: it resumes from the bytes already received",
  LevelNotFound: "`hsctl status` shows the tree; a path starts at the level hsctl talks to, e.g. l0/l1/l2",
  HostKeyUnknown: "if the fingerprint is the one the level shows (`hsctl status` on that host), add it: ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts",
  NotController: "on that level: `hsctl access add --role controller YOUR_KEY.pub`",
  CloudInit: "on the VM: cloud-init status --long (and journalctl -u cloud-final); a user-data module failed (state error) or never finished (state running). Fix what it names in the VM's user-data, then re-run: the install waits for cloud-init again",
  AptLocked: "on the VM another apt/dpkg run holds the lock (fuser -v /var/lib/dpkg/lock-frontend /var/lib/apt/lists/lock); let it finish, then re-run",
  LevelWentDown: "the level's machine rebooted or powered off while hsd worked outside a configure step (e.g. its provider's set-up); nobody cancelled anything. When it is back (hsctl status), re-run: finished phases and steps are skipped. A step that reboots the machine itself is resumed as a reboot, so put such work in a configure step",
  RebootRefused: "a reboot of this level would stop the levels below it: destroy them first (hsctl destroy --level PATH), re-run the configure (hsctl sync --configure), then nest them again; or make the step reboot only where nothing is built below it",
  Internal: "this is a bug in hsd; the daemon log has the details",
};

/** The hint for an error code, or undefined when there is none. */
export function hintFor(code: string): string | undefined {
  return Object.hasOwn(HINTS, code) ? HINTS[code as ErrorCode] : undefined;
}

/**
 * "prog: message [Code]" plus an indented hint line when there is one; never a
 * stack. A multi-line message (a list of issues) keeps the code on its first line.
 * `hint` replaces the table's (e.g. the one a daemon reported).
 */
export function formatError(prog: string, code: string, message: string, hint = hintFor(code)): string {
  const nl = message.indexOf("\n");
  const [first, rest] = nl < 0 ? [message, ""] : [message.slice(0, nl), message.slice(nl)];
  return `${prog}: ${first} [${code}]${rest}${hint ? `\n  hint: ${hint}` : ""}`;
}

/**
 * Hints for one step or check that fails for a reason its error code alone does
 * not say (a provider passes one as details.hint, a check as its hint).
 */
export const STEP_HINTS = Object.freeze({
  localGitTimeout: "a git process on this level did not finish (a full or stalled disk?); check `df`, the disk's health and the level's log (hsd.log)",
  cloudInitFailed: "cloud-init status --long; journalctl -u cloud-final",
  childHasNoNode: "build the bundle with `node scripts/bundle.mjs --with-node`, or put node >= 20 in the template",
  childHsdLog: "on the child: systemctl status hsd; journalctl -u hsd -n 50",
  childHsdStatus: "on the child: systemctl status hsd; journalctl -u hsd",
  noGuestAddress: "check the template has qemu-guest-agent and DHCP on the bridge",
  noSnippets: "run `hsctl doctor`: preflight enables snippets on the storage",
  pveNotInstalled: "the configure steps must install PVE before hsd sets it up",
  noPveSection: "add a pve: section (see docs/proxmox.md)",
  noSshKeyWired: "wire sshPrivateKeyPath (this level's key) into PveProvider",
  noBundle: "build it on this level: npm run build && node scripts/bundle.mjs",
  netnsUnavailable: "run as root with iproute2 installed, or use --isolation process",
  zoneIdSan: "run: sysctl -w net.ipv6.conf.all.disable_ipv6=1; pvecm updatecerts --force; sysctl -w net.ipv6.conf.all.disable_ipv6=0; systemctl restart pveproxy",
  pveFingerprint: "set pve.fingerprint to the node's API certificate fingerprint",
  pveproxyDown: "is pveproxy running? systemctl status pveproxy; journalctl -u pveproxy",
  pveTooOld: "upgrade the node (pve7to8, then pve8to9) or build this level on a newer node",
  apiCheckFirst: "fix the api check first",
  seeErrorCode: "see the error code in the hsd docs",
  noKvm: "enable VT-x/AMD-V (and for a VM level: cpu=host on its parent)",
  unknownNode: "set pve.node",
  nodeOffline: "wait for pve-cluster/pvestatd after boot, then retry",
  snippetStorageNotDir: "set pve.snippet_storage to a dir storage such as local",
  noTemplate: "list pve.image's file under images: (hsd then makes the template at pve.template), or make one there yourself (docs/proxmox.md)",
  noImportContent: "upgrade the node to PVE 8.2 or later, or make the template at pve.template yourself (docs/proxmox.md)",
  importStorageNotDir: "the `local` storage must be a directory storage (PVE's default, /var/lib/vz): import volumes live in it",
  noBridge: "create it in /etc/network/interfaces or set pve.bridge",
  lowDisk: "free space or set pve.storage to a larger storage",
  pveNotPinned:
    "set pve.fingerprint to the SHA-256 fingerprint of the node's API certificate: on the node run " +
    "`openssl x509 -in /etc/pve/local/pve-ssl.pem -noout -fingerprint -sha256` (or read ssl_fingerprint from GET /nodes)",
});

/**
 * Hints built from values only known at run time (a module, a storage, a VM
 * id, a token): the wording lives here, the caller passes the values.
 */
export const VALUE_HINTS = Object.freeze({
  nestedVirtOff: (mod: string) =>
    `echo 'options ${mod} nested=1' > /etc/modprobe.d/kvm-nested.conf, stop all VMs, then modprobe -r ${mod} && modprobe ${mod}`,
  hostsEntry: (hostname: string, hostsFile: string) => `add "<ipv4> <fqdn> ${hostname}" to ${hostsFile}`,
  tokenRefused: (tokenId: string) =>
    `check pve.token_id and pve.token_secret in secrets.yaml; create one with: pveum user token add ${tokenId.replace("!", " ")} --privsep 0`,
  snippetsContent: (storage: string, content: string) => `pvesm set ${storage} --content ${content}`,
  storageStatus: (storage: string) => `pvesm status --storage ${storage}`,
  makeTemplate: (vmid: number | string) => `qm template ${vmid}`,
  imageNotHeld: (image: string) => `add ${image} to images: at level 0 (a level below holds the images its parent passed down for its subtree)`,
  diskTooSmall: (node: string, gib: number) => `give node ${node} a disk (or a preset) of at least ${gib} GiB, or make its image's template smaller`,
  templateBlockFull: (from: number, to: number) => `free a vmid in ${from}-${to} (hsd's template block), or set pve.template to the start of a free block of 100`,
  imageRoom: (dir: string) => `free space on the filesystem of ${dir}, or set image_dir to a larger one, then re-run`,
  templateSlot: (vmid: number | string) =>
    `set pve.template to a free vmid (the level's children inherit it), or remove VM ${vmid} on this level (qm destroy ${vmid}) if nothing needs it`,
  staleToken: (user: string, id: string) =>
    `if nothing uses it: pveum user token remove ${user} ${id}; otherwise put its secret in secrets.yaml as pve.token_secret`,
});
