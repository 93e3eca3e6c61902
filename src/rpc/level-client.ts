// Domain-typed clients for a level's NestService and AccessService: proto in,
// domain out, so callers (hsctl, the parent's child link) never see generated
// types. Unary calls take the caller's deadline; streams end with the call.
// Imported by: src/cli, src/rpc.

import { AccessService, Isolation, NestService } from "../gen/homestak/nest/v1/nest_pb.js";
import type { CheckResult } from "../domain/checks.js";
import type { LevelEvent } from "../domain/events.js";
import type { AuthorizedKey, DestroyOptions, Identity, KeyRole, LevelPath, LevelStatus, LogLine, LogsOptions, SyncOptions } from "../domain/level-api.js";
import type { ProviderOptions } from "../domain/providers.js";
import { createClient, type CallOpts, type ClientOptions } from "./client.js";
import type { BuildPlan } from "../domain/plan.js";
import { toProtoPlan } from "./convert-plan.js";
import { fromProtoCheck, fromProtoEvent, fromProtoIdentity, fromProtoKey, fromProtoLogLine, fromProtoStatus, toProtoPhase, toProtoRole } from "./convert.js";
import { durationFromMs } from "@bufbuild/protobuf/wkt";

export type LevelCallOpts = Pick<CallOpts, "signal" | "deadlineMs">;

/** What a caller may leave to the serving level's config: "" / undefined = its default. */
export interface NestRequest {
  readonly depth: number;
  readonly width: number;
  readonly provider?: string;
  /** The provider's options (the proto carries the local provider's isolation). */
  readonly options?: ProviderOptions;
  /** A manifest for the serving level (level 0) to load and validate. */
  readonly manifest?: { readonly name?: string; readonly yaml?: string; readonly file?: string; readonly prune?: boolean };
  /** A parent's plan for the serving level's subtree. */
  readonly plan?: BuildPlan;
}

export interface NestClient {
  identify(o?: LevelCallOpts): Promise<Identity>;
  /** The level's status tree; undefined when the level answered without one. */
  status(o?: LevelCallOpts, levelPath?: LevelPath): Promise<LevelStatus | undefined>;
  putSecrets(yaml: string, o?: LevelCallOpts): Promise<string[]>;
  nest(req: NestRequest, o?: LevelCallOpts): AsyncIterable<LevelEvent>;
  sync(req: SyncOptions, o?: LevelCallOpts): AsyncIterable<LevelEvent>;
  destroy(req: DestroyOptions, o?: LevelCallOpts): AsyncIterable<LevelEvent>;
  configure(o?: LevelCallOpts): AsyncIterable<LevelEvent>;
  doctor(req: { provider?: string; options?: ProviderOptions; levelPath?: LevelPath }, o?: LevelCallOpts): Promise<CheckResult[]>;
  /** Log lines of the level (sinceMs: the lines at most that old, on the caller's clock: sent as a duration). */
  logs(req: Omit<LogsOptions, "sinceMs"> & { sinceAgoMs?: number }, o?: LevelCallOpts): AsyncIterable<LogLine>;
  close(): void;
}

export interface AccessClient {
  addKey(key: { publicKey: string; role: KeyRole }, o?: LevelCallOpts): Promise<AuthorizedKey | undefined>;
  removeKey(sel: { publicKey: string; fingerprint: string }, o?: LevelCallOpts): Promise<boolean>;
  listKeys(o?: LevelCallOpts): Promise<AuthorizedKey[]>;
  close(): void;
}

const toIsolation = (o: ProviderOptions | undefined): Isolation =>
  o?.isolation === "netns" ? Isolation.NETNS : o?.isolation === "process" ? Isolation.PROCESS : Isolation.UNSPECIFIED;

async function* events(stream: AsyncIterable<{ event?: Parameters<typeof fromProtoEvent>[0] }>): AsyncIterable<LevelEvent> {
  for await (const m of stream) if (m.event) yield fromProtoEvent(m.event);
}

export function nestClient(target: string, opts?: ClientOptions): NestClient {
  const c = createClient(NestService, target, opts);
  return {
    async identify(o) { return fromProtoIdentity(await c.identify({}, o)); },
    async status(o, levelPath) {
      const r = await c.status({ levelPath: [...(levelPath ?? [])] }, o);
      return r.root ? fromProtoStatus(r.root) : undefined;
    },
    async putSecrets(yaml, o) { return (await c.putSecrets({ yaml }, o)).keys; },
    nest(req, o) {
      return events(c.nest({
        depth: req.depth, width: req.width, provider: req.provider ?? "", isolation: toIsolation(req.options),
        manifestName: req.manifest?.name ?? "", manifestYaml: req.manifest?.yaml ?? "", manifestFile: req.manifest?.file ?? "", prune: req.manifest?.prune ?? false,
        ...(req.plan ? toProtoPlan(req.plan) : {}),
      }, o));
    },
    sync(req, o) {
      return events(c.sync({
        recursive: req.recursive, configure: req.configure ?? false, levelPath: [...(req.levelPath ?? [])],
        parentRefs: Object.entries(req.parentRefs ?? {}).map(([repo, r]) => ({ repo, head: r.head, refs: { ...r.refs } })),
      }, o));
    },
    destroy(req, o) { return events(c.destroy({ self: req.self, manifest: req.manifest ?? "", names: [...(req.names ?? [])], levelPath: [...(req.levelPath ?? [])] }, o)); },
    configure(o) { return events(c.configure({}, o)); },
    async doctor(req, o) {
      const r = await c.doctor({ provider: req.provider ?? "", isolation: toIsolation(req.options), levelPath: [...(req.levelPath ?? [])] }, o);
      return r.checks.map(fromProtoCheck);
    },
    async *logs(req, o) {
      const stream = c.logs({
        levelPath: [...(req.levelPath ?? [])], follow: req.follow,
        ...(req.sinceAgoMs !== undefined ? { since: durationFromMs(Math.round(req.sinceAgoMs)) } : {}),
        ...(req.phase ? { phase: toProtoPhase(req.phase) } : {}),
      }, o);
      for await (const m of stream) yield fromProtoLogLine(m);
    },
    close() { c.close(); },
  };
}

export function accessClient(target: string, opts?: ClientOptions): AccessClient {
  const c = createClient(AccessService, target, opts);
  return {
    async addKey(key, o) {
      const r = await c.addKey({ key: { publicKey: key.publicKey, role: toProtoRole(key.role) } }, o);
      return r.key ? fromProtoKey(r.key) : undefined;
    },
    async removeKey(sel, o) { return (await c.removeKey({ publicKey: sel.publicKey, fingerprint: sel.fingerprint }, o)).removed; },
    async listKeys(o) { return (await c.listKeys({}, o)).keys.map(fromProtoKey); },
    close() { c.close(); },
  };
}
