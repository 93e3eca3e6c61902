// A level's on-disk layout: every file and directory under a level's root, and
// the system-wide locations of a service install. The only module that knows
// these paths; the daemon, the local provider and hsctl ask it.
// Imported by: anyone.

/** Files under a level's root. Only this function knows the layout. */
export function levelPaths(root: string) {
  return Object.freeze({
    root,
    config: `${root}/hsd.yaml`,
    socket: `${root}/run/hsd.sock`,
    runDir: `${root}/run`,
    stateDir: `${root}/state`,
    reposDir: `${root}/repos`,
    workDir: `${root}/repos/work`,
    keysDir: `${root}/keys`,
    secrets: `${root}/secrets.yaml`,
    journal: `${root}/state/journal.json`,
    accessKeys: `${root}/state/authorized-keys.json`,
    levelsDir: `${root}/state/levels`,
    /** sha256 of image files by path, size and mtime (src/images/image-digest.ts). */
    imageDigests: `${root}/state/image-digests.json`,
    ready: `${root}/run/ready.json`,
    /** The SSH port this level bound last (kept when ssh.port is unset, see HsdConfig.ssh.reuseLastPort). */
    sshPort: `${root}/state/ssh-port`,
    log: `${root}/hsd.log`,
    /** A local child's "unit": how its parent started it, so its reboot starts it the same way (providers/local/local-reboot.ts). */
    bootUnit: `${root}/boot-unit.json`,
    /** Where a configure step writes a reboot request (src/homestak/step-reboot.ts). */
    rebootRequest: `${root}/run/reboot-request`,
    /** Where a configure step run against leaf `name` writes its reboot request (src/nest/leaf-reboot.ts). */
    leafRebootRequest: (name: string) => `${root}/run/leaf-${name}.reboot-request`,
    /** Present while a local child's reboot takes it down (src/providers/local/local-reboot.ts, src/daemon/going-down-probe.ts). */
    goingDown: `${root}/run/going-down`,
  });
}

export type LevelPaths = ReturnType<typeof levelPaths>;

/** System-wide locations when hsd runs without --root (as a service). */
export const SYSTEM_PATHS = Object.freeze({
  config: "/etc/homestak/hsd.yaml",
  socket: "/run/hsd/hsd.sock",
  stateRoot: "/var/lib/hsd",
});
