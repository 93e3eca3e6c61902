// A level's gitignored site-config files in homestak's own schema:
// config/site.yaml (the parent's, unchanged) and config/secrets.yaml (0600,
// atomic; api_tokens map, passwords, ssh_keys name -> key map, auth). This is
// the level's only secrets file homestak sees; hsd's private keys and token
// stay in its state. Only key names ever leave this module. Imported by the
// secrets phase (parent side), the level (child side) and the daemon wiring.
// Imported by: src/nest/phases, src/level, src/daemon.

import { existsSync } from "node:fs";
import { chmod, chown, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { decryptSopsYaml, type AgeDecrypt } from "./sops-decrypt.js";
import { stringify } from "yaml";
import { writeFileAtomic } from "../util/atomic-write.js";
import { readTextIfExists } from "../util/read-if-exists.js";
import { SerialQueue } from "../util/serial-queue.js";
import { InvalidArgumentError, SecretsEncryptedError, StateCorruptError } from "../domain/errors.js";
import { isTree, parseSecretsYaml, type SecretTree, type SecretValue } from "../secrets/secrets-store.js";
import { settleAll } from "../util/settle-all.js";
import type { HomestakLayout } from "./layout.js";
import type { TreeOwner } from "./tree-owner.js";

/** Never passed down, whatever secrets.pass_down says: a token stays on the node it belongs to. */
const NEVER_PASSED = new Set(["api_tokens"]);
const MAX_SITE_BYTES = 256 * 1024;

/** What a parent hands a child in the secrets phase. */
export interface LevelFiles {
  /** config/site.yaml text, byte for byte (absent when the parent has none). */
  readonly site?: string;
  readonly secrets: SecretTree;
}

/**
 * The child's secrets from the parent's: only the top-level keys (or dotted
 * paths) in passDown, never api_tokens; ssh_keys stays a name -> key map,
 * loses the parent's `self` and gains the parent's own key under its name.
 */
export function scopeForChild(tree: SecretTree, passDown: readonly string[], parent: { name: string; publicKey: string }): SecretTree {
  const out: SecretTree = {};
  for (const path of passDown) {
    const parts = path.split(".");
    if (NEVER_PASSED.has(parts[0]!)) continue;
    let src: SecretValue | undefined = tree;
    for (const p of parts) src = isTree(src) ? src[p] : undefined;
    if (src === undefined) continue;
    let dst = out;
    for (const p of parts.slice(0, -1)) {
      if (!isTree(dst[p])) dst[p] = {};
      dst = dst[p] as SecretTree;
    }
    dst[parts[parts.length - 1]!] = structuredClone(src);
  }
  if (passDown.includes("ssh_keys")) {
    const keys: SecretTree = isTree(tree.ssh_keys) ? structuredClone(tree.ssh_keys) : {};
    delete keys.self;
    if (parent.publicKey) keys[parent.name] = parent.publicKey;
    out.ssh_keys = keys;
  }
  return out;
}

export function encodeLevelFiles(f: LevelFiles): string {
  return stringify({ site_yaml: f.site ?? null, secrets: f.secrets });
}

/** Parses a PutSecrets payload; errors never echo its content. */
export function decodeLevelFiles(yaml: string, source: string): LevelFiles {
  const tree = parseSecretsYaml(yaml, source);
  const site = tree.site_yaml;
  const secrets = tree.secrets ?? {};
  const extra = Object.keys(tree).filter((k) => k !== "site_yaml" && k !== "secrets");
  if (extra.length > 0) throw new InvalidArgumentError(`${source}: unexpected keys ${extra.join(", ")}`, { details: { source, keys: extra } });
  if (site !== null && site !== undefined && typeof site !== "string") throw new InvalidArgumentError(`${source}: site_yaml must be text`, { details: { source } });
  if (!isTree(secrets)) throw new InvalidArgumentError(`${source}: secrets must be a mapping`, { details: { source } });
  if (typeof site === "string" && Buffer.byteLength(site) > MAX_SITE_BYTES) throw new InvalidArgumentError(`${source}: site.yaml too large`, { details: { source } });
  return typeof site === "string" ? { site, secrets } : { secrets };
}

export interface SiteConfigDeps {
  readonly layout: HomestakLayout;
  /** This level's name and public key (ssh_keys.self). */
  readonly self: () => { name: string; publicKey: string };
  /** Test hook between a secrets write and its rename. */
  readonly beforeRename?: (tmp: string) => Promise<void> | void;
  /** The operator's age identity files (sops' own lookup); used only when secrets.yaml.enc is all there is. */
  readonly ageIdentityFiles?: readonly string[];
  readonly age?: AgeDecrypt;
  /** homestak.user: owns config/ and the files written here (homestak's tools read them as it). */
  readonly owner?: TreeOwner;
}

/** The level's config/site.yaml and config/secrets.yaml. hsd never writes level 0's. */
export class SiteConfigFiles {
  private readonly queue = new SerialQueue();

  constructor(private readonly d: SiteConfigDeps) {}

  /** config/site.yaml text, if any. */
  async readSite(): Promise<string | undefined> {
    return readTextIfExists(this.d.layout.siteYaml);
  }

  /**
   * config/secrets.yaml as a tree ({} when there is none). When only
   * secrets.yaml.enc exists (sops + age), it is decrypted in memory with the
   * operator's age identity; without one, SecretsEncrypted says how to fix it.
   */
  async readSecrets(): Promise<SecretTree> {
    const text = await readTextIfExists(this.d.layout.secretsYaml);
    if (text !== undefined) return parseSecretsYaml(text, this.d.layout.secretsYaml, StateCorruptError);
    const enc = await readTextIfExists(this.d.layout.secretsEnc);
    if (enc === undefined) return {};
    const ids = (this.d.ageIdentityFiles ?? []).filter((f) => existsSync(f));
    if (ids.length === 0) {
      throw new SecretsEncryptedError(`${this.d.layout.secretsEnc} is encrypted, there is no plaintext ${this.d.layout.secretsYaml}, and no age identity to decrypt it`, {
        details: { file: this.d.layout.secretsEnc, looked: this.d.ageIdentityFiles ?? [] },
      });
    }
    if (Buffer.byteLength(enc) > MAX_SITE_BYTES) throw new SecretsEncryptedError(`${this.d.layout.secretsEnc}: too large`, { details: { file: this.d.layout.secretsEnc } });
    return decryptSopsYaml(enc, this.d.layout.secretsEnc, ids, this.d.age);
  }

  /**
   * Writes what the parent handed down (child levels only): site.yaml as is,
   * secrets.yaml as the scoped keys plus what is this level's own
   * (api_tokens, ssh_keys.self). Returns the top-level key names written.
   */
  put(files: LevelFiles): Promise<string[]> {
    return this.queue.run(async () => {
      await this.ensureConfigDir();
      // The two files side by side (neither reads the other; each is durable before this returns),
      // and both settle before a failure is reported.
      const site = files.site !== undefined ? writeFileAtomic(this.d.layout.siteYaml, files.site, { mode: 0o644, ...this.ownerOpt() }) : undefined;
      const secrets = (async () => {
        const cur = await this.readSecrets().catch(() => ({} as SecretTree));
        const next: SecretTree = structuredClone(files.secrets);
        // A level's own token (written by its own configure) survives a re-delivery; nobody else's is accepted.
        delete next.api_tokens;
        if (isTree(cur.api_tokens)) next.api_tokens = cur.api_tokens;
        const me = this.d.self();
        const keys: SecretTree = isTree(next.ssh_keys) ? next.ssh_keys : {};
        keys.self = me.publicKey;
        next.ssh_keys = keys;
        await this.writeSecrets(next);
        return Object.keys(next).sort();
      })();
      const [, keys] = await settleAll([site, secrets]);
      return keys;
    });
  }

  /**
   * Sets this level's own API token (homestak's api_tokens.<name>, the value
   * `user@realm!tokenid=<secret>`), written by the level's own PVE configure.
   * api_tokens then holds exactly that one entry: no other node's token lives here.
   */
  putOwnApiToken(name: string, value: string): Promise<void> {
    return this.queue.run(async () => {
      await this.ensureConfigDir();
      const next = await this.readSecrets();
      next.api_tokens = { [name]: value };
      await this.writeSecrets(next);
    });
  }

  /** A file under config/ that is not a secret (nodes/<name>.yaml), atomic, owned like the rest. */
  putConfigFile(relPath: string, text: string): Promise<void> {
    return this.queue.run(async () => {
      await this.ensureConfigDir();
      const path = join(this.d.layout.configDir, relPath);
      const dir = dirname(path);
      await mkdir(dir, { recursive: true });
      if (this.d.owner) await chown(dir, this.d.owner.uid, this.d.owner.gid);
      await chmod(dir, 0o755);
      await writeFileAtomic(path, text, { mode: 0o644, ...this.ownerOpt() });
    });
  }

  private ownerOpt(): { owner?: TreeOwner } {
    return this.d.owner ? { owner: this.d.owner } : {};
  }

  private async ensureConfigDir(): Promise<void> {
    await mkdir(this.d.layout.configDir, { recursive: true });
    if (this.d.owner) await chown(this.d.layout.configDir, this.d.owner.uid, this.d.owner.gid);
  }

  private writeSecrets(tree: SecretTree): Promise<void> {
    return writeFileAtomic(this.d.layout.secretsYaml, stringify(tree, { lineWidth: 0 }), { mode: 0o600, beforeRename: this.d.beforeRename, ...this.ownerOpt() });
  }
}
