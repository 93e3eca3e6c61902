// NestService handlers: validate each request at the gRPC boundary, call the
// injected LevelApi with domain types, convert results back to proto. Inner
// layers trust what gets past here.
// Imported by: src/api.

import { parseDocument, isMap } from "yaml";
import type { HsdConfig } from "../config/config.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { Isolation, NestService } from "../gen/homestak/nest/v1/nest_pb.js";
import type { EventSink } from "../domain/events.js";
import type { ExportRefs, LevelApi, LevelPath, NestOptions, ParentRefs } from "../domain/level-api.js";
import { durationMs } from "@bufbuild/protobuf/wkt";
import type { MethodsOf, ServiceHandlers } from "../rpc/service-definition.js";
import { fromProtoPhase, toProtoCheck, toProtoEvent, toProtoIdentity, toProtoLogLine, toProtoStatus } from "../rpc/convert.js";
import { eventStream } from "./event-stream.js";
import { isProviderName, PROVIDER_NAMES, type ProviderName, type ProviderOptions } from "../domain/providers.js";
import { heightOf, isNodeName, type BuildPlan } from "../domain/plan.js";
import { fromProtoPlan } from "../rpc/convert-plan.js";
import { Phase } from "../gen/homestak/nest/v1/nest_pb.js";

/** Deeper than any tree a level allows (nest.max_depth is far less); bounds a relayed path. */
export const MAX_LEVEL_PATH = 32;
const LEVEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** A level path as a request carries it: level names, bounded; the levels themselves check that they exist. */
export function validateLevelPath(path: readonly string[]): LevelPath {
  if (path.length > MAX_LEVEL_PATH) {
    throw new InvalidArgumentError(`level path has ${path.length} names; at most ${MAX_LEVEL_PATH}`, { details: { field: "level_path" } });
  }
  for (const n of path) {
    if (!LEVEL_NAME.test(n)) throw new InvalidArgumentError(`level path holds ${JSON.stringify(n.slice(0, 64))}, not a level name`, { details: { field: "level_path" } });
  }
  return path;
}

/** A repo set is a handful of repos; a repo's heads and tags, at most this many. */
export const MAX_PARENT_REPOS = 64;
export const MAX_REFS_PER_REPO = 100_000;
const REPO_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const SERVED_REF = /^refs\/(heads|tags)\/[^\0\s]{1,1000}$/;
const OBJECT_ID = /^([0-9a-f]{40}|[0-9a-f]{64})$/;

/**
 * A sync's parent refs as the request carries them: named repos, each with a
 * HEAD branch among its refs, only heads and tags at well-formed object ids.
 * A child trusts them to skip fetches, so nothing malformed gets past here.
 */
export function validateParentRefs(list: readonly { repo: string; head: string; refs: { [ref: string]: string } }[]): ParentRefs | undefined {
  if (list.length === 0) return undefined;
  const bad = (why: string) => new InvalidArgumentError(`parent_refs: ${why}`, { details: { field: "parent_refs" } });
  if (list.length > MAX_PARENT_REPOS) throw bad(`${list.length} repos; at most ${MAX_PARENT_REPOS}`);
  const out: Record<string, ExportRefs> = {};
  for (const e of list) {
    if (!REPO_NAME.test(e.repo)) throw bad(`${JSON.stringify(e.repo.slice(0, 64))} is not a repo name`);
    if (Object.hasOwn(out, e.repo)) throw bad(`repo ${e.repo} appears twice`);
    const entries = Object.entries(e.refs);
    if (entries.length > MAX_REFS_PER_REPO) throw bad(`repo ${e.repo} has ${entries.length} refs; at most ${MAX_REFS_PER_REPO}`);
    for (const [ref, oid] of entries) {
      if (!SERVED_REF.test(ref) || ref.split("/").includes("..")) throw bad(`repo ${e.repo}: ${JSON.stringify(ref.slice(0, 64))} is not a head or tag`);
      if (!OBJECT_ID.test(oid)) throw bad(`repo ${e.repo}: ${ref} names ${JSON.stringify(oid.slice(0, 80))}, not an object id`);
    }
    if (!e.head.startsWith("refs/heads/") || !Object.hasOwn(e.refs, e.head)) throw bad(`repo ${e.repo}: HEAD ${JSON.stringify(e.head.slice(0, 64))} is not one of its branches`);
    out[e.repo] = { head: e.head, refs: { ...e.refs } };
  }
  return out;
}

/** Secrets for one child are a handful of tokens and keys; anything bigger is a mistake. */
export const MAX_SECRETS_YAML_BYTES = 64 * 1024;

export type NestLimits = Pick<HsdConfig["nest"], "maxDepth" | "maxWidth" | "provider"> & {
  /**
   * Checks a request's options against what its provider takes and fills in
   * this level's defaults (the daemon passes the provider registry's); absent:
   * options pass as sent.
   */
  readonly providerOptions?: (provider: ProviderName, requested: ProviderOptions) => ProviderOptions;
};

type Handlers = ServiceHandlers<MethodsOf<typeof NestService>>;

/** Loads and validates a manifest the request names (level 0's site-config); absent: this level takes none. */
export type ManifestLoader = (req: { name?: string; text?: string; file?: string }) => Promise<BuildPlan>;

export function validateNest(req: { depth: number; width: number; provider: string; isolation: Isolation }, limits: NestLimits): NestOptions {
  if (req.depth > limits.maxDepth) {
    throw new InvalidArgumentError(`depth ${req.depth} is more than this level allows (${limits.maxDepth})`, {
      details: { field: "depth", max: limits.maxDepth },
    });
  }
  const width = req.width === 0 ? 1 : req.width;
  if (width > limits.maxWidth) {
    throw new InvalidArgumentError(`width ${width} is more than this level allows (${limits.maxWidth})`, {
      details: { field: "width", max: limits.maxWidth },
    });
  }
  const provider = req.provider === "" ? limits.provider : req.provider;
  if (!isProviderName(provider)) {
    throw new InvalidArgumentError(`unknown provider ${JSON.stringify(provider.slice(0, 32))} (expected ${PROVIDER_NAMES.join(" or ")})`, {
      details: { field: "provider" },
    });
  }
  // The proto's isolation field carries the local provider's option of that name.
  let requested: ProviderOptions;
  switch (req.isolation) {
    case Isolation.UNSPECIFIED: requested = {}; break;
    case Isolation.PROCESS: requested = { isolation: "process" }; break;
    case Isolation.NETNS: requested = { isolation: "netns" }; break;
    default: throw new InvalidArgumentError(`unknown isolation ${req.isolation}`, { details: { field: "isolation" } });
  }
  const options = limits.providerOptions ? limits.providerOptions(provider, requested) : requested;
  return { depth: req.depth, width, provider, options };
}

/** Checks the scoped-secrets YAML without ever quoting it (parser messages can echo values). */
export function validateSecretsYaml(yaml: string): void {
  const bytes = Buffer.byteLength(yaml, "utf8");
  if (bytes > MAX_SECRETS_YAML_BYTES) {
    throw new InvalidArgumentError(`secrets yaml is ${bytes} bytes; the limit is ${MAX_SECRETS_YAML_BYTES}`, {
      details: { field: "yaml", bytes, max: MAX_SECRETS_YAML_BYTES },
    });
  }
  const doc = parseDocument(yaml, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new InvalidArgumentError("secrets yaml is not valid YAML", { details: { field: "yaml" } });
  }
  if (!isMap(doc.contents)) {
    throw new InvalidArgumentError("secrets yaml must be a mapping of names to values", { details: { field: "yaml" } });
  }
}

export function nestHandlers(level: LevelApi, limits: NestLimits, loadManifest?: ManifestLoader): Handlers {
  const events = (run: (sink: EventSink) => Promise<void>) => (async function* () {
    for await (const ev of eventStream(run)) yield { event: toProtoEvent(ev) };
  })();
  return {
    nest(req, ctx) {
      // Validate before the stream starts so a bad request fails without any event.
      const opts = validateNest(req, limits);
      const plan = fromProtoPlan(req);
      if (plan) return events((sink) => level.nest({ ...opts, plan, depth: heightOf(plan.nodes) }, sink, ctx.signal));
      if (req.manifestName === "" && req.manifestYaml === "") return events((sink) => level.nest(opts, sink, ctx.signal));
      if (!loadManifest) throw new InvalidArgumentError("this level builds no manifest of its own (level 0 does)", { details: { field: "manifest_name" } });
      // The manifest is checked in full before the first event: a bad one builds nothing.
      return (async function* () {
        const plan = await loadManifest(req.manifestName ? { name: req.manifestName } : { text: req.manifestYaml, file: req.manifestFile });
        const loaded = req.prune ? { ...plan, prune: true } : plan;
        yield* events((sink) => level.nest({ ...opts, plan: loaded, depth: heightOf(loaded.nodes) }, sink, ctx.signal));
      })();
    },
    async status(req, ctx) {
      return { root: toProtoStatus(await level.status(ctx.signal, validateLevelPath(req.levelPath))) };
    },
    destroy(req, ctx) {
      const levelPath = validateLevelPath(req.levelPath);
      const scoped = req.manifest !== "" || req.names.length > 0;
      if (req.names.some((n) => !isNodeName(n))) throw new InvalidArgumentError("destroy: names must be level names", { details: { field: "names" } });
      // A scoped destroy never stops the serving level: the rest of its tree lives on.
      return events((sink) => level.destroy({ self: req.self && !scoped, ...(req.manifest ? { manifest: req.manifest } : {}), ...(req.names.length ? { names: req.names } : {}), levelPath }, sink, ctx.signal));
    },
    sync(req, ctx) {
      const levelPath = validateLevelPath(req.levelPath);
      const parentRefs = validateParentRefs(req.parentRefs);
      return events((sink) => level.sync({ recursive: req.recursive, configure: req.configure, levelPath, ...(parentRefs ? { parentRefs } : {}) }, sink, ctx.signal));
    },
    async *logs(req, ctx) {
      const levelPath = validateLevelPath(req.levelPath);
      const since = req.since ? durationMs(req.since) : undefined;
      if (since !== undefined && !(since >= 0)) throw new InvalidArgumentError("since must not be negative", { details: { field: "since" } });
      if (req.phase !== Phase.UNSPECIFIED && !Object.values(Phase).includes(req.phase)) {
        throw new InvalidArgumentError(`unknown phase ${req.phase}`, { details: { field: "phase" } });
      }
      const opts = {
        follow: req.follow, levelPath,
        ...(since !== undefined ? { sinceMs: Date.now() - since } : {}),
        ...(req.phase !== Phase.UNSPECIFIED ? { phase: fromProtoPhase(req.phase) } : {}),
      };
      for await (const l of level.logs(opts, ctx.signal)) yield toProtoLogLine(l);
    },
    async identify() {
      return toProtoIdentity(await level.identify());
    },
    async putSecrets(req) {
      validateSecretsYaml(req.yaml);
      return { keys: await level.putSecrets(req.yaml) };
    },
    configure(_req, ctx) {
      return events((sink) => level.configure(sink, ctx.signal));
    },
    async doctor(req, ctx) {
      const levelPath = validateLevelPath(req.levelPath);
      const { provider, options } = validateNest({ depth: 0, width: 1, provider: req.provider, isolation: req.isolation }, limits);
      // For a level below, unset provider/isolation stay unset: that level's own handler fills in its defaults.
      const below = levelPath.length > 1;
      const checks = await level.doctor(below ? {
        levelPath,
        ...(req.provider !== "" ? { provider } : {}),
        ...(req.isolation !== Isolation.UNSPECIFIED ? { options: { isolation: req.isolation === Isolation.NETNS ? "netns" : "process" } } : {}),
      } : { provider, options, levelPath }, ctx.signal);
      return { checks: checks.map(toProtoCheck) };
    },
  };
}
