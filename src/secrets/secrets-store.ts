// hsd's own private secrets of a level (its token, its key path, a PVE API
// token secret): one YAML mapping, mode 0600, written atomically, outside
// every working tree, never served, synced or passed down. homestak's secrets
// are in config/secrets.yaml (src/homestak/site-config.ts), never copied here.
// Values read here never go to logs, events or errors: only key names leave
// this module.
// Imported by: src/daemon, src/level, src/nest, src/providers, src/homestak.

import { chmod } from "node:fs/promises";
import { readTextIfExists } from "../util/read-if-exists.js";
import { SerialQueue } from "../util/serial-queue.js";
import { parseDocument, stringify } from "yaml";
import { randomBytes } from "node:crypto";
import { writeFileAtomic } from "../util/atomic-write.js";
import { InvalidArgumentError, StateCorruptError } from "../domain/errors.js";

export type SecretTree = { [key: string]: SecretValue };
export type SecretValue = string | number | boolean | null | SecretValue[] | SecretTree;

const MAX_SECRETS_BYTES = 256 * 1024;

export class SecretsStore {
  /** Serializes writers: a later write never races an earlier one's rename. */
  private readonly queue = new SerialQueue();

  constructor(private readonly path: string, private readonly hooks: { beforeRename?: (tmp: string) => Promise<void> | void } = {}) {}

  /** The whole tree ({} when absent). Throws StateCorrupt, never echoing content. */
  async read(): Promise<SecretTree> {
    const text = await readTextIfExists(this.path);
    if (text === undefined) return {};
    return parseSecretsYaml(text, this.path, StateCorruptError);
  }

  /** Deep-merges `patch` into the file and returns the top-level key names now present. */
  merge(patch: SecretTree): Promise<string[]> {
    return this.serialize(async () => {
      const cur = await this.read();
      const next = deepMerge(cur, patch);
      await this.writeTree(next);
      return Object.keys(next).sort();
    });
  }

  /** Replaces the file content. */
  write(tree: SecretTree): Promise<void> {
    return this.serialize(() => this.writeTree(tree));
  }

  /** Ensures generated per-level values exist (its own tokens, its key path). */
  ensureGenerated(gen: { keyPath: string }): Promise<void> {
    return this.serialize(async () => {
      const cur = await this.read();
      const tokens = (isTree(cur.tokens) ? cur.tokens : {}) as SecretTree;
      const ssh = (isTree(cur.ssh) ? cur.ssh : {}) as SecretTree;
      let changed = false;
      if (typeof tokens.hsd !== "string") { tokens.hsd = randomBytes(24).toString("base64url"); changed = true; }
      if (ssh.private_key_path !== gen.keyPath) { ssh.private_key_path = gen.keyPath; changed = true; }
      if (changed) await this.writeTree({ ...cur, tokens, ssh });
      else await chmod(this.path, 0o600).catch(() => {});
    });
  }

  private async writeTree(tree: SecretTree): Promise<void> {
    const text = stringify(tree);
    // Never write a file read() would refuse: the level could not start again.
    if (Buffer.byteLength(text) > MAX_SECRETS_BYTES) {
      throw new InvalidArgumentError(`secrets would grow past ${MAX_SECRETS_BYTES} bytes; not written`, { details: { max: MAX_SECRETS_BYTES } });
    }
    await writeFileAtomic(this.path, text, { mode: 0o600, beforeRename: this.hooks.beforeRename });
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }
}

/**
 * Parses a YAML mapping of secrets. Errors name the source and line only:
 * YAML parser messages quote source text, which may be a secret.
 */
export function parseSecretsYaml(
  text: string, source: string, ErrorClass: typeof InvalidArgumentError | typeof StateCorruptError = InvalidArgumentError,
): SecretTree {
  if (Buffer.byteLength(text) > MAX_SECRETS_BYTES) throw new ErrorClass(`${source}: secrets larger than ${MAX_SECRETS_BYTES} bytes`, { details: { source } });
  const doc = parseDocument(text, { prettyErrors: false });
  if (doc.errors.length > 0) {
    const line = doc.errors[0]!.linePos?.[0]?.line;
    throw new ErrorClass(`${source}: secrets are not valid YAML${line ? ` (line ${line})` : ""}`, { details: { source, line } });
  }
  let v: unknown;
  try {
    v = doc.toJS(); // throws on an unresolved alias or an alias bomb; its message is not echoed
  } catch {
    throw new ErrorClass(`${source}: secrets YAML cannot be resolved (aliases)`, { details: { source } });
  }
  if (v === null || v === undefined) return {};
  if (!isTree(v)) throw new ErrorClass(`${source}: secrets must be a YAML mapping`, { details: { source } });
  return v;
}

export function isTree(v: unknown): v is SecretTree {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepMerge(a: SecretTree, b: SecretTree): SecretTree {
  const out: SecretTree = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = isTree(v) && isTree(out[k]) ? deepMerge(out[k] as SecretTree, v) : v;
  }
  return out;
}
