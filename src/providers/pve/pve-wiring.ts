// Builds the pve provider and the PVE configure step for a level. Both need
// values that only exist at run time: the API token secret (secrets.yaml
// pve.token_secret) and, on a child, the API certificate fingerprint learned in
// its own configure step (kept in state/pve.json).
// Imported by: src/daemon, src/providers.

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { HsdConfig } from "../../config/config.js";
import type { Logger } from "../../log/logger.js";
import type { ConfigureLevel, Provider } from "../provider.js";
import { PveProvider } from "./pve-provider.js";
import { configurePveLevel, type ConfigurePveLevelOptions, type ConfigurePveLevelResult } from "./configure-level.js";
import { recordHomestakNode, type HomestakNodeFiles } from "./homestak-node.js";
import { runCommand } from "../../util/command-runner.js";
import { writeFileAtomic } from "../../util/atomic-write.js";
import { ProviderError } from "../../domain/errors.js";
import { isTree, type SecretsStore } from "../../secrets/secrets-store.js";
import type { LocalEvent } from "../../domain/events.js";
import { pveConfigOf } from "./pve-config.js";
import { STEP_HINTS } from "../../domain/hints.js";
import { buildTemplate, prepareImport, type TemplateImage } from "./ensure-template.js";
import { beginTemplateReads, type TemplateReads } from "./child-preflight.js";
import { failedChecksError } from "../../domain/checks.js";
import { settleAll } from "../../util/settle-all.js";
import type { ImageDigests } from "../../images/image-digest.js";
import { beginAhead, type Ahead } from "./set-up-ahead.js";

interface PveState { fingerprint?: string }

async function readPveState(stateDir: string): Promise<PveState> {
  try {
    return JSON.parse(await readFile(join(stateDir, "pve.json"), "utf8")) as PveState;
  } catch {
    return {};
  }
}

async function tokenSecret(secrets: SecretsStore): Promise<string> {
  const tree = await secrets.read();
  const s = isTree(tree.pve) ? tree.pve.token_secret : undefined;
  return typeof s === "string" ? s : "";
}

/** The image pve.image names, with the sha256 config gives it ("" unknown), when this level holds it (images:). */
function templateImageEntry(config: HsdConfig): { name: string; path: string; sha256: string } | undefined {
  const name = pveConfigOf(config)?.image ?? "";
  const entry = Object.hasOwn(config.images.entries, name) ? config.images.entries[name] : undefined;
  return entry ? { name, path: entry.path, sha256: entry.sha256 } : undefined;
}

async function templateImageOf(config: HsdConfig, digests: ImageDigests): Promise<TemplateImage | undefined> {
  const entry = templateImageEntry(config);
  return entry && { name: entry.name, path: entry.path, sha256: (await digests.digest(entry.path)).sha256 };
}

/** A Provider whose real instance is made on first use (and remade after a failure to make it). */
export function lazyPveProvider(o: {
  config: HsdConfig; secrets: SecretsStore; stateDir: string; publicKey: string; userKeyPath: string; log: Logger; digests: ImageDigests;
}): Provider {
  let made: Promise<Provider> | undefined;
  const get = (): Promise<Provider> => {
    made ??= (async () => {
      const pve = pveConfigOf(o.config);
      if (!pve) throw new ProviderError("no pve: section in hsd.yaml", { details: { hint: STEP_HINTS.noPveSection } });
      const st = await readPveState(o.stateDir);
      return new PveProvider({
        config: { ...pve, ...(st.fingerprint && !pve.fingerprint ? { fingerprint: st.fingerprint } : {}) },
        tokenSecret: await tokenSecret(o.secrets),
        sshPublicKeys: [o.publicKey],
        sshPrivateKeyPath: o.userKeyPath,
        connectTimeoutMs: o.config.timeouts.connectMs,
        ...(pve.bundle ? { bundlePath: pve.bundle } : {}),
        images: { entries: o.config.images.entries, sha256: async (path) => (await o.digests.digest(path)).sha256 },
        // Level 0 makes its template from its image when pve.template is free; below, configure does.
        ...(o.config.parent ? {} : { templateImage: () => templateImageOf(o.config, o.digests) }),
      });
    })();
    made.catch(() => { made = undefined; });
    return made;
  };
  return {
    name: "pve",
    preflight: async (ctx) => (await get()).preflight(ctx),
    provision: async (name, depth, ctx, node, install) => (await get()).provision(name, depth, ctx, node, install),
    boot: async (child, ctx) => (await get()).boot(child, ctx),
    install: async (child, spec, ctx) => (await get()).install(child, spec, ctx),
    alive: async (child) => (await get()).alive(child),
    destroy: async (child, ctx) => (await get()).destroy(child, ctx),
  };
}

/** The dir storage import volumes live in: PVE's `local` (/var/lib/vz), where the iso directory is too. */
const IMPORT_STORAGE = "local";

/** What pveConfigure reaches on its node; tests point them at the simulator. Default: this machine's. */
export type PveLevelHost = Partial<Pick<ConfigurePveLevelOptions, "commands" | "apiUrl" | "hostname" | "hostsFile" | "pveCertFile" | "resolveHost" | "clientOptions">>;

/** The configure step of a level that runs on a PVE node: token, snippets, certificate, then its template. */
export function pveConfigure(o: {
  config: HsdConfig; secrets: SecretsStore; stateDir: string; digests: ImageDigests; homestakFiles?: HomestakNodeFiles; host?: PveLevelHost;
}): ConfigureLevel {
  const pve = pveConfigOf(o.config)!;
  const commands = o.host?.commands ?? runCommand;
  const logTo = (emit: (ev: LocalEvent) => void) => (message: string) => emit({ phase: "configure", kind: "log", message });
  const setUp = async (emit: (ev: LocalEvent) => void, signal: AbortSignal) => configurePveLevel({
    ...o.host, commands, tokenId: pve.tokenId, tokenSecret: (await tokenSecret(o.secrets)) || undefined,
    saveTokenSecret: async (s) => { await o.secrets.merge({ pve: { token_secret: s } }); },
    node: pve.node, snippetStorage: pve.snippetStorage, bridge: pve.bridge, signal, log: logTo(emit),
  });
  // The template this level's children are cloned from, made from the image its parent
  // sent it. Without images: the operator's template at pve.template, as before.
  const makeTemplate = async (r: ConfigurePveLevelResult, image: TemplateImage | undefined, emit: (ev: LocalEvent) => void, signal: AbortSignal,
    ahead?: { onUnderWay: () => void; importDir: Promise<string>; reads?: TemplateReads }) => {
    if (!image) return;
    const log = logTo(emit);
    // Its own preflight first (the template's vmid, room for it and a clone), then the template.
    const checks = await buildTemplate({
      client: r.client, commands, node: pve.node, vmid: pve.template, image,
      storage: pve.storage, bridge: pve.bridge, importStorage: IMPORT_STORAGE,
      task: { signal, timeoutMs: o.config.budgets.configure }, signal, log, ...ahead,
    });
    for (const c of checks) log(`${c.name}: ${c.result} - ${c.detail}`);
    const failed = failedChecksError(checks, "this level cannot hold its template", { step: "template" });
    if (failed) throw failed;
  };
  let ahead: Ahead<ConfigurePveLevelResult> | undefined;
  let ran = false;
  return {
    begin(signal, imagesIn) {
      if (ran || ahead) return Promise.resolve();
      const entry = templateImageEntry(o.config);
      let underWay!: () => void;
      const started = new Promise<void>((resolve) => { underWay = resolve; });
      // No image to make a template from: nothing for the repos to wait for.
      if (!entry) underWay();
      ahead = beginAhead(signal, setUp, async (r, emit, sig, joined) => {
        if (!entry) return true;
        // The import storage is made ready, and the checks' API reads asked (the image's sha256 is
        // in config), while the image is still on its way: none of it needs the file.
        const importDir = prepareImport({ client: r.client, importStorage: IMPORT_STORAGE, signal: sig, log: logTo(emit) });
        importDir.catch(() => {}); // awaited by the template, or dropped with it
        const reads = entry.sha256
          ? beginTemplateReads({ client: r.client, node: pve.node, vmid: pve.template, image: { name: entry.name, path: entry.path, sha256: entry.sha256 }, version: r.version, signal: sig })
          : undefined;
        // The image comes with the sync: the template starts once it is in, not once
        // configure is asked for. Images that failed fail the sync; nothing is made here.
        if (!(await Promise.race([imagesIn, joined.then(() => true)]))) return false;
        await makeTemplate(r, await templateImageOf(o.config, o.digests), emit, sig, { onUnderWay: underWay, importDir, ...(reads ? { reads } : {}) });
        return true;
      });
      void ahead.settled.then(underWay);
      return started;
    },
    async run(emit, signal) {
      ran = true;
      const a = ahead;
      ahead = undefined;
      const log = logTo(emit);
      let r: ConfigurePveLevelResult;
      let template: Promise<void>;
      if (a) {
        // Begun at the handshake: its lines so far, then the rest as they come. A set-up that
        // failed is run again here (pveum never twice: the first is over); a template it made is kept.
        const joined = a.join(emit, signal);
        const early = await joined.first.catch(() => undefined);
        r = early ?? await setUp(emit, signal);
        const now = async () => makeTemplate(r, await templateImageOf(o.config, o.digests), emit, signal);
        template = early ? joined.then.then((made) => (made ? undefined : now())) : now();
      } else {
        // What the template's checks need besides the API (the image's sha256) is begun now and
        // awaited after the token and certificate work, not after it.
        const image = templateImageOf(o.config, o.digests);
        image.catch(() => {}); // awaited below
        r = await setUp(emit, signal);
        template = (async () => makeTemplate(r, await image, emit, signal))();
      }
      // Three things need the token and nothing of each other, so they run side by side: the pin
      // for this level's own provider, homestak's record of this node (its token and
      // nodes/<name>.yaml, for homestak's tools), and the template (its PVE tasks).
      const pinned = writeFileAtomic(join(o.stateDir, "pve.json"), JSON.stringify({ fingerprint: r.fingerprint }), { mode: 0o600 });
      const name = o.config.level.name;
      const recorded = o.homestakFiles ? (async () => recordHomestakNode({
        files: o.homestakFiles!, name, node: pve.node, tokenId: r.tokenId, tokenSecret: await tokenSecret(o.secrets),
        datastore: pve.storage, bridge: pve.bridge, commands, signal,
      }))() : undefined;
      // Nothing is left running past the phase: all settle, then the template's failure comes first.
      const [, , record] = await settleAll([template, pinned, recorded]);
      if (record) log(`homestak: api_tokens.${name} and nodes/${name}.yaml written (ip ${record.ip || "none"})`);
    },
  };
}
