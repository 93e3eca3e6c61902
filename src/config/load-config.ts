// Loads hsd.yaml into a frozen HsdConfig. The only reader of the config file.
// Every error names the file, the line and the key, and unknown keys are
// errors too: a typo must not silently fall back to a default. One run reports
// every error (ConfigError.details.issues, config-issues.ts).
// Imported by: src/cli, src/daemon.

import { readFile } from "node:fs/promises";
import { isAbsolute, resolve } from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { ConfigError } from "../domain/errors.js";
import { ConfigIssues } from "./config-issues.js";
import { ConfigReader, type Raw } from "./config-reader.js";
import {
  DEFAULTS, DEFAULT_BUDGETS_MS, DEFAULT_REPO_NAMES, MAX_CONNECT_MS,
  type HsdConfig, type ParentConfig, type ProviderConfigSpec, type ProviderSettings,
} from "./config.js";
import { levelPaths } from "./level-layout.js";
import { PHASES, type PhaseName } from "../domain/phases.js";
import { PROVIDER_NAMES, type ProviderName } from "../domain/providers.js";
import { parseImages } from "./images-config.js";
import { checkLayout, parseConfigureSteps, parseHomestak } from "./homestak-config.js";
import { lookupUser } from "../util/passwd.js";
import { publicKeyLineFingerprint } from "../util/ssh-key-fingerprint.js";

export interface LoadOptions {
  /** The level's root directory; relative paths in the file resolve against it. */
  root: string;
  /** Socket override (system mode puts it under /run/hsd). */
  socket?: string;
  /** The homestak user's home on an installed system: the default homestak.root there. */
  homestakHome?: string;
  /** The default homestak.user (an installed system whose `homestak` user exists); none on a --root level. */
  homestakUser?: string;
  /** Local user lookup for homestak.user (default /etc/passwd) and hsd's uid (default the process's). */
  lookupUser?: (name: string) => { uid: number } | undefined;
  uid?: number;
  /**
   * An unset ssh.port means a free port rather than 2222: a level under a
   * user's root must never collide with the system hsd or another user's.
   */
  freeSshPort?: boolean;
  /**
   * What each provider owns of the file (src/providers/registry.ts
   * PROVIDER_CONFIGS): its nest.<option> keys and its section. Absent: none,
   * so such keys are unknown.
   */
  providers?: readonly ProviderConfigSpec[];
}

const oneOf = (names: readonly string[]) => new RegExp(`^(${names.join("|")})$`);
/** A level's name is its homestak node name (hostname, nodes/<name>.yaml, api_tokens key): a DNS label. */
export const LEVEL_NAME_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const NAME_RE = LEVEL_NAME_RE;
const REPO_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Parses YAML text into a config. `file` is used in error messages only. */
export function parseConfig(text: string, file: string, opts: LoadOptions): HsdConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const issues = new ConfigIssues();
  // Syntax errors end the run: the values of a broken document would only add noise.
  for (const e of doc.errors) {
    // linePos is only filled with prettyErrors; the offset is always there.
    const pos = e.linePos?.[0] ?? (e.pos ? lc.linePos(e.pos[0]) : undefined);
    issues.add({
      file, ...(pos ? { line: pos.line, column: pos.col } : {}), key: "", message: `YAML syntax error: ${e.message.split("\n")[0]}`,
    });
  }
  issues.throwIfAny();
  const r = new ConfigReader(file, doc, lc, issues);
  let js: unknown;
  try {
    js = doc.toJS(); // throws on an unresolved alias or an alias bomb
  } catch (err) {
    throw new ConfigError(`${file}: YAML cannot be resolved: ${(err as Error).message.split("\n")[0]}`, { details: { file, key: "" }, cause: err });
  }
  const specs = opts.providers ?? [];
  const top = r.map(js, [], [
    "level", "api", "ssh", "repos", "repo_names", "secret_patterns", "parent", "timeouts", "budgets",
    "nest", "secrets", "sync", ...specs.flatMap((p) => (p.section ? [p.section.key] : [])), "log", "homestak", "configure",
    "images", "image_dir",
  ]);
  const root = resolve(opts.root);
  const paths = levelPaths(root);
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(root, p));

  const level = r.map(top.level, ["level"], ["name", "depth", "spec", "manifest"]);
  const api = r.map(top.api, ["api"], ["socket"]);
  const ssh = r.map(top.ssh, ["ssh"], [
    "host", "port", "advertise_host", "max_upload_packs", "queue_timeout", "upload_pack_timeout", "auth_failure_delay", "max_image_transfers",
  ]);
  const reposRaw = r.map(top.repos, ["repos"], Object.keys((top.repos as Raw) ?? {}));
  const repos: Record<string, string> = {};
  for (const [name, p] of Object.entries(reposRaw)) {
    if (!REPO_NAME_RE.test(name)) r.fail(["repos", name], "invalid repo name");
    repos[name] = abs(r.str(p, ["repos", name], ""));
  }
  const timeouts = r.map(top.timeouts, ["timeouts"], ["connect", "command", "health_poll", "shutdown"]);
  const budgetsRaw = r.map(top.budgets, ["budgets"], [...PHASES]);
  const budgets = {} as Record<PhaseName, number>;
  for (const p of PHASES) budgets[p] = r.duration(budgetsRaw[p], ["budgets", p], DEFAULT_BUDGETS_MS[p]);
  const nest = r.map(top.nest, ["nest"], [
    "provider", ...specs.flatMap((p) => Object.keys(p.options ?? {})), "max_parallel", "max_depth", "max_width", "subnet_base",
  ]);
  const secrets = r.map(top.secrets, ["secrets"], ["pass_down"]);
  const sync = r.map(top.sync, ["sync"], ["mode", "debounce"]);
  const logc = r.map(top.log, ["log"], ["level"]);

  let parent: ParentConfig | null = null;
  if (top.parent !== undefined && top.parent !== null) {
    const p = r.map(top.parent, ["parent"], ["host", "port", "host_key_fingerprint", "public_key", "host_key"]);
    const hostKeyFingerprint = r.str(p.host_key_fingerprint, ["parent", "host_key_fingerprint"], "", /^SHA256:[A-Za-z0-9+/=]+$/);
    parent = Object.freeze({
      host: r.str(p.host, ["parent", "host"], "", /^[A-Za-z0-9.:\-[\]]+$/),
      port: r.int(p.port, ["parent", "port"], 2222, 1, 65535),
      hostKeyFingerprint,
      publicKey: r.str(p.public_key, ["parent", "public_key"], "", /^ssh-[a-z0-9-]+ [A-Za-z0-9+/=]+( .*)?$/),
      hostKey: parentHostKey(r, p.host_key, hostKeyFingerprint),
    });
    if (!parent.host) r.fail(["parent", "host"], "is required");
    if (!parent.hostKeyFingerprint) r.fail(["parent", "host_key_fingerprint"], "is required");
  }

  const sshHost = r.str(ssh.host, ["ssh", "host"], DEFAULTS.sshHost);
  const provider = r.str(nest.provider, ["nest", "provider"], DEFAULTS.provider, oneOf(PROVIDER_NAMES)) as ProviderName;
  const cfg: Omit<HsdConfig, "homestak" | "configure"> = {
    source: file,
    root,
    level: Object.freeze({
      name: r.str(level.name, ["level", "name"], DEFAULTS.levelName, NAME_RE),
      depth: r.int(level.depth, ["level", "depth"], 0, 0, 64),
      spec: r.str(level.spec, ["level", "spec"], "", NAME_RE),
      manifest: r.str(level.manifest, ["level", "manifest"], ""),
    }),
    api: Object.freeze({ socket: opts.socket ?? abs(r.str(api.socket, ["api", "socket"], paths.socket)) }),
    ssh: Object.freeze({
      host: sshHost,
      port: r.int(ssh.port, ["ssh", "port"], opts.freeSshPort ? 0 : DEFAULTS.sshPort, 0, 65535),
      reuseLastPort: Boolean(opts.freeSshPort) && (ssh.port === undefined || ssh.port === null),
      advertiseHost: r.str(ssh.advertise_host, ["ssh", "advertise_host"], sshHost === "0.0.0.0" ? "127.0.0.1" : sshHost),
      maxUploadPacks: r.int(ssh.max_upload_packs, ["ssh", "max_upload_packs"], DEFAULTS.maxUploadPacks, 1, 256),
      queueTimeoutMs: r.duration(ssh.queue_timeout, ["ssh", "queue_timeout"], DEFAULTS.queueTimeoutMs),
      uploadPackTimeoutS: Math.ceil(r.duration(ssh.upload_pack_timeout, ["ssh", "upload_pack_timeout"], DEFAULTS.uploadPackTimeoutS * 1000) / 1000),
      authFailureDelayMs: r.duration(ssh.auth_failure_delay, ["ssh", "auth_failure_delay"], DEFAULTS.authFailureDelayMs, 10_000),
    }),
    repos: Object.freeze(repos),
    repoNames: Object.freeze(
      top.repo_names !== undefined
        ? r.strList(top.repo_names, ["repo_names"], DEFAULT_REPO_NAMES).map((n, i) => r.str(n, ["repo_names", i], "", REPO_NAME_RE))
        : Object.keys(repos).length > 0 ? Object.keys(repos) : [...DEFAULT_REPO_NAMES],
    ),
    secretPatterns: Object.freeze(r.strList(top.secret_patterns, ["secret_patterns"], DEFAULTS.secretPatterns)),
    parent,
    timeouts: Object.freeze({
      connectMs: r.duration(timeouts.connect, ["timeouts", "connect"], DEFAULTS.connectMs, MAX_CONNECT_MS),
      commandMs: r.duration(timeouts.command, ["timeouts", "command"], DEFAULTS.commandMs),
      healthPollMs: r.duration(timeouts.health_poll, ["timeouts", "health_poll"], DEFAULTS.healthPollMs, 100),
      shutdownMs: r.duration(timeouts.shutdown, ["timeouts", "shutdown"], DEFAULTS.shutdownMs, 60_000),
    }),
    budgets: Object.freeze(budgets),
    nest: Object.freeze({
      provider,
      maxParallel: r.int(nest.max_parallel, ["nest", "max_parallel"], DEFAULTS.maxParallel, 1, 64),
      maxDepth: r.int(nest.max_depth, ["nest", "max_depth"], DEFAULTS.maxDepth, 1, 32),
      maxWidth: r.int(nest.max_width, ["nest", "max_width"], DEFAULTS.maxWidth, 1, 64),
      subnetBase: r.str(nest.subnet_base, ["nest", "subnet_base"], DEFAULTS.subnetBase, /^\d{1,3}\.\d{1,3}$/),
    }),
    secrets: Object.freeze({ passDown: Object.freeze(r.strList(secrets.pass_down, ["secrets", "pass_down"], DEFAULTS.passDown)) }),
    sync: Object.freeze({
      mode: r.str(sync.mode, ["sync", "mode"], DEFAULTS.syncMode, /^(manual|watch)$/) as "manual" | "watch",
      debounceMs: r.duration(sync.debounce, ["sync", "debounce"], DEFAULTS.debounceMs),
    }),
    providers: readProviders(r, specs, top, nest),
    images: parseImages(r, top, root, ssh.max_image_transfers),
    log: Object.freeze({ level: r.str(logc.level, ["log", "level"], DEFAULTS.logLevel, /^(trace|debug|info|warn|error|fatal|silent)$/) }),
  };
  const lookup = opts.lookupUser ?? lookupUser;
  const homestak = parseHomestak(r, top, root, {
    ...(opts.homestakHome ? { home: opts.homestakHome } : {}), ...(opts.homestakUser ? { defaultUser: opts.homestakUser } : {}),
    userExists: (n) => lookup(n) !== undefined, uidOf: (n) => lookup(n)?.uid, uid: opts.uid ?? process.getuid?.() ?? 0,
  });
  checkLayout(r, homestak.layout, cfg.repoNames);
  const withHomestak: HsdConfig = {
    ...cfg, homestak,
    configure: parseConfigureSteps(r, top, { repoNames: cfg.repoNames, configureBudgetMs: cfg.budgets.configure }),
  };
  const mine = specs.find((p) => p.name === provider);
  if (mine?.section?.required && !cfg.providers[provider]?.section) {
    r.fail(["nest", "provider"], `is ${provider} but there is no ${mine.section.key}: section`);
  }
  // A section's checks against the rest of the file (pve.image must name one of images:).
  for (const p of specs) {
    const section = cfg.providers[p.name]?.section;
    if (section && p.section?.check) p.section.check(r, section, withHomestak);
  }
  issues.throwIfAny();
  return Object.freeze(withHomestak);
}

/** Each provider's options (its keys under nest:) and section, read by its own spec. */
function readProviders(r: ConfigReader, specs: readonly ProviderConfigSpec[], top: Raw, nest: Raw): Record<string, ProviderSettings> {
  const out: Record<string, ProviderSettings> = {};
  for (const p of specs) {
    const options: Record<string, string> = {};
    for (const [k, o] of Object.entries(p.options ?? {})) options[k] = r.str(nest[k], ["nest", k], o.default, oneOf(o.values));
    const raw = p.section ? top[p.section.key] : undefined;
    const section = p.section && raw !== undefined && raw !== null ? Object.freeze(p.section.read(r, raw)) : null;
    out[p.name] = Object.freeze({ options: Object.freeze(options), section, ...(p.section ? { key: p.section.key } : {}) });
  }
  return Object.freeze(out);
}

/** Reads `file` (missing file = all defaults) and parses it. */
export async function loadConfig(file: string, opts: LoadOptions): Promise<HsdConfig> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return parseConfig("", `${file} (absent: defaults)`, opts);
    throw new ConfigError(`${file}: cannot read: ${(err as Error).message}`, { details: { file }, cause: err });
  }
  return parseConfig(text, file, opts);
}

/**
 * parent.host_key: the key whose fingerprint is pinned beside it, as "<type> <base64>";
 * "" when absent. Another key than the pinned one is an error, never a second trust.
 */
function parentHostKey(r: ConfigReader, raw: unknown, fingerprint: string): string {
  const line = r.str(raw, ["parent", "host_key"], "");
  if (!line) return "";
  const key = publicKeyLineFingerprint(line);
  if (!key) {
    r.fail(["parent", "host_key"], "is not an OpenSSH public key line (\"ssh-ed25519 AAAA...\")");
    return "";
  }
  if (fingerprint && key.fingerprint !== fingerprint) {
    r.fail(["parent", "host_key"], "is not the key parent.host_key_fingerprint pins");
    return "";
  }
  return `${key.type} ${key.blob.toString("base64")}`;
}
