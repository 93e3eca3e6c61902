// The hsd.yaml a parent writes for a child at install time, shared by every
// provider so a local child and a PVE child get the same settings.
// Imported by: src/providers/local, src/providers/pve.

import { configYaml } from "../config/write-config.js";
import type { ChildInstallSpec } from "./provider.js";

export interface ChildNetwork {
  /** Address the child's SSH endpoint binds. */
  readonly sshHost: string;
  /** Address the child tells others it is at. */
  readonly advertiseHost: string;
  /** The parent's SSH endpoint as the child reaches it. */
  readonly parentHost: string;
  /** Where the child keeps the images it fetches; absent: its default (homestak's iso directory). */
  readonly imageDir?: string;
}

/** `sshPort` null: none in the file (a free port, kept across the child's restarts). */
export function childConfigYaml(spec: ChildInstallSpec, net: ChildNetwork, nest: Record<string, unknown>, sshPort: number | null = 0): string {
  const config = {
    level: { name: spec.name, depth: spec.depth, ...(spec.node ? { spec: spec.node.spec, manifest: spec.node.manifest } : {}) },
    ssh: { host: net.sshHost, ...(sshPort === null ? {} : { port: sshPort }), advertise_host: net.advertiseHost },
    parent: {
      host: net.parentHost,
      port: spec.parentPort,
      host_key_fingerprint: spec.parentHostKeyFingerprint,
      ...(spec.parentHostKey ? { host_key: spec.parentHostKey } : {}),
      public_key: spec.parentPublicKey,
    },
    repo_names: [...spec.repoNames],
    ...spec.extraConfig,
    ...(net.imageDir ? { image_dir: net.imageDir } : {}),
    nest: { ...(spec.extraConfig.nest as object | undefined), ...nest },
  };
  return configYaml(config, "written by the parent hsd at install");
}
