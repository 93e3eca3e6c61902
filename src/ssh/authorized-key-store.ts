// The keys that may use this level's SSH endpoint and their roles. Persisted as
// JSON (atomic writes) at levelPaths(root).accessKeys; keys from the config
// (the parent's controller key) are added at startup and never persisted.
// Implements AccessApi for src/api; the SSH endpoint calls lookup().
// Imported by: src/daemon, src/ssh.

import { readTextIfExists } from "../util/read-if-exists.js";
import { timingSafeEqual } from "node:crypto";
import type { Logger } from "../log/logger.js";
import type { AccessApi, AuthorizedKey, KeyRole } from "../domain/level-api.js";
import { InvalidArgumentError, StateCorruptError } from "../domain/errors.js";
import { writeFileAtomic, type AtomicWriteOptions } from "../util/atomic-write.js";
import { SerialQueue } from "../util/serial-queue.js";
import { parsePublicKeyLine } from "./key-fingerprint.js";

interface Entry { key: AuthorizedKey; blob: Buffer; persisted: boolean }

const ROLES: readonly KeyRole[] = ["reader", "controller"];

export class AuthorizedKeyStore implements AccessApi {
  private entries: Entry[] = [];
  /** Writes of the file, one at a time: two that overlapped could rename in the other order and leave it without the later change. */
  private readonly writes = new SerialQueue();

  constructor(
    private readonly path: string,
    private readonly log: Logger,
    /** Test hook: each write's temp file, synced, before its rename. */
    private readonly hooks: Pick<AtomicWriteOptions, "beforeRename"> = {},
  ) {}

  /** Reads the persisted keys (a missing file is an empty store). */
  async load(): Promise<void> {
    const text = await readTextIfExists(this.path);
    if (text === undefined) return;
    let doc: { keys?: { publicKey: string; role: KeyRole; comment?: string }[] };
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new StateCorruptError("authorized keys file is not JSON", { details: { path: this.path }, cause: err });
    }
    const loaded: Entry[] = [];
    for (const k of doc.keys ?? []) {
      try {
        loaded.push({ ...this.build(k), persisted: true });
      } catch (err) {
        throw new StateCorruptError("authorized keys file holds an invalid key", { details: { path: this.path }, cause: err });
      }
    }
    this.entries = [...this.entries.filter((e) => !e.persisted), ...loaded];
  }

  private build(k: { publicKey: string; role: KeyRole; comment?: string }): Omit<Entry, "persisted"> {
    if (!ROLES.includes(k.role)) throw new InvalidArgumentError("role must be reader or controller", { details: { role: String(k.role) } });
    const p = parsePublicKeyLine(k.publicKey);
    const comment = (k.comment ?? p.comment).replace(/[^\x20-\x7e]/g, "").slice(0, 200);
    return {
      key: Object.freeze({ publicKey: p.line, role: k.role, fingerprint: p.fingerprint, comment }),
      blob: p.blob,
    };
  }

  private upsert(entry: Entry): void {
    this.entries = this.entries.filter((e) => e.key.fingerprint !== entry.key.fingerprint);
    this.entries.push(entry);
  }

  async addKey(k: { publicKey: string; role: KeyRole; comment?: string }): Promise<AuthorizedKey> {
    const entry = { ...this.build(k), persisted: true };
    this.upsert(entry);
    await this.save();
    this.log.info({ fingerprint: entry.key.fingerprint, role: entry.key.role }, "authorized key added");
    return entry.key;
  }

  /** Authorizes a key for this process's lifetime only (config-supplied keys such as parent.publicKey). */
  addStaticKey(k: { publicKey: string; role: KeyRole; comment?: string }): AuthorizedKey {
    const entry = { ...this.build(k), persisted: false };
    this.upsert(entry);
    return entry.key;
  }

  async removeKey(sel: { publicKey?: string; fingerprint?: string }): Promise<boolean> {
    let fp = sel.fingerprint;
    if (sel.publicKey !== undefined) fp = parsePublicKeyLine(sel.publicKey).fingerprint;
    if (!fp) throw new InvalidArgumentError("removeKey needs a publicKey or a fingerprint");
    const before = this.entries.length;
    const hadPersisted = this.entries.some((e) => e.key.fingerprint === fp && e.persisted);
    this.entries = this.entries.filter((e) => e.key.fingerprint !== fp);
    if (hadPersisted) await this.save();
    if (this.entries.length !== before) this.log.info({ fingerprint: fp }, "authorized key removed");
    return this.entries.length !== before;
  }

  async listKeys(): Promise<AuthorizedKey[]> {
    return this.entries.map((e) => e.key);
  }

  /**
   * The authorized key whose wire blob equals `blob`, compared in constant time
   * over every key so timing does not reveal which (or whether a) key matched.
   * `algo` is informational: the blob itself names the key type.
   */
  lookup(_algo: string, blob: Buffer): AuthorizedKey | undefined {
    let found: AuthorizedKey | undefined;
    for (const e of this.entries) {
      const same = e.blob.length === blob.length && timingSafeEqual(e.blob, blob);
      if (same && found === undefined) found = e.key;
    }
    return found;
  }

  /** Persists the keys as they are when this write's turn comes (so the last write holds every change before it). */
  private save(): Promise<void> {
    return this.writes.run(async () => {
      const keys = this.entries.filter((e) => e.persisted).map((e) => ({
        publicKey: e.key.publicKey, role: e.key.role, comment: e.key.comment,
      }));
      await writeFileAtomic(this.path, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600, ...this.hooks });
    });
  }
}
