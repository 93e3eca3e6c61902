// The inverse of load-config.ts: an HsdConfig back into hsd.yaml keys. Kept
// next to the loader and checked against it by a round-trip test, so the file a
// parent writes for its child always means what the parent meant.
// Imported by: src/nest, src/providers.

import { stringify } from "yaml";
import type { HsdConfig } from "./config.js";
import { stepsToYaml } from "./homestak-config.js";
import { imagesForChild, imagesToYaml } from "./images-config.js";

const ms = (v: number) => `${v}ms`;

/** Every setting of `c` as hsd.yaml keys (parseConfig of its YAML gives `c` back). */
export function configDocument(c: HsdConfig): Record<string, unknown> {
  const doc: Record<string, unknown> = {
    level: { name: c.level.name, depth: c.level.depth, ...(c.level.spec ? { spec: c.level.spec } : {}), ...(c.level.manifest ? { manifest: c.level.manifest } : {}) },
    api: { socket: c.api.socket },
    ssh: {
      // An unset port stays unset: it means "a free port, kept across restarts" (reuseLastPort).
      host: c.ssh.host, ...(c.ssh.reuseLastPort ? {} : { port: c.ssh.port }), advertise_host: c.ssh.advertiseHost,
      max_upload_packs: c.ssh.maxUploadPacks, queue_timeout: ms(c.ssh.queueTimeoutMs),
      upload_pack_timeout: `${c.ssh.uploadPackTimeoutS}s`, auth_failure_delay: ms(c.ssh.authFailureDelayMs),
      max_image_transfers: c.images.maxTransfers,
    },
    image_dir: c.images.dir,
    repos: { ...c.repos },
    repo_names: [...c.repoNames],
    ...inheritedConfig(c),
    sync: { mode: c.sync.mode, debounce: ms(c.sync.debounceMs) },
  };
  // $HOMESTAK_ROOT is the level's own (never inherited): written only in the whole document.
  doc.images = imagesToYaml(c.images);
  doc.homestak = { root: c.homestak.root, ...(doc.homestak as object), ...(c.homestak.user ? { user: c.homestak.user } : {}) };
  const options = Object.values(c.providers).map((p) => p.options);
  doc.nest = { provider: c.nest.provider, ...Object.assign({}, ...options), ...(doc.nest as object) };
  if (c.parent) {
    doc.parent = {
      host: c.parent.host, port: c.parent.port,
      host_key_fingerprint: c.parent.hostKeyFingerprint, public_key: c.parent.publicKey,
      ...(c.parent.hostKey ? { host_key: c.parent.hostKey } : {}),
    };
  }
  for (const p of Object.values(c.providers)) if (p.key && p.section) doc[p.key] = { ...p.section };
  return doc;
}

/**
 * The settings a child inherits from its parent, as hsd.yaml keys. `images`:
 * the names the child's subtree needs (a manifest child); absent: every image this level serves.
 * `digests`: this level's known sha256 and size of its images (passed on, so the child can skip asking).
 */
export function inheritedConfig(
  c: HsdConfig, images?: ReadonlySet<string>, digests?: Readonly<Record<string, { sha256: string; size: number }>>,
): Record<string, unknown> {
  const budgets: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.budgets)) budgets[k] = ms(v);
  return {
    timeouts: {
      connect: ms(c.timeouts.connectMs), command: ms(c.timeouts.commandMs),
      health_poll: ms(c.timeouts.healthPollMs), shutdown: ms(c.timeouts.shutdownMs),
    },
    budgets,
    secrets: { pass_down: [...c.secrets.passDown] },
    secret_patterns: [...c.secretPatterns],
    nest: {
      max_parallel: c.nest.maxParallel, max_depth: c.nest.maxDepth, max_width: c.nest.maxWidth, subnet_base: c.nest.subnetBase,
    },
    log: { level: c.log.level },
    // The operator defines the steps and the layout once, at level 0; every level runs them on its own trees.
    // A local child shares this host's users, so it hands its trees to the same one; another host picks its own.
    homestak: { layout: { ...c.homestak.layout }, ...(c.homestak.user && c.nest.provider === "local" ? { user: c.homestak.user } : {}) },
    configure: { steps: stepsToYaml(c.configure.steps) },
    // A level serves its children the images its parent served it: the names flow down, the files are fetched at sync.
    images: imagesForChild(c.images, images, digests),
  };
}

/** hsd.yaml text for a document built from configDocument (or a part of it). */
export function configYaml(doc: Record<string, unknown>, comment: string): string {
  return `# ${comment}\n${stringify(doc)}`;
}
