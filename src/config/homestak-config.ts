// Parses the homestak-facing sections of hsd.yaml: `homestak:` (the homestak
// root and the repo -> path layout) and `configure.steps`. Every error names
// file:line and key through the loader's Reader (passed in, typed here by
// the methods used, so this module does not import the loader).
// Imported by: src/config, src/providers/pve/pve-install-step.ts.

import { isAbsolute, normalize, resolve } from "node:path";
import { DEFAULTS, DEFAULT_LAYOUT, type ConfigureStep, type HsdConfig } from "./config.js";
import type { ProviderName } from "../domain/providers.js";

/** What this module uses of the loader's Reader (every failure names file:line and key). */
export interface Reader {
  fail(path: (string | number)[], message: string): void;
  map(v: unknown, path: (string | number)[], allowed: readonly string[]): Record<string, unknown>;
  str(v: unknown, path: (string | number)[], def: string, re?: RegExp): string;
  int(v: unknown, path: (string | number)[], def: number, min: number, max: number): number;
  duration(v: unknown, path: (string | number)[], defMs: number, maxMs?: number): number;
}

type Raw = Record<string, unknown>;

const STEP_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
/** Steps hsd adds itself (a PVE level's install, src/providers/pve/pve-install-step.ts): an operator's step may not take their names. */
export const PVE_INSTALL_STEP_NAME = "pve-install";
export const RESERVED_STEP_NAMES: readonly string[] = Object.freeze([PVE_INSTALL_STEP_NAME]);

/** Env names that would carry a secret: secrets belong in config/secrets.yaml, never in a step's environment. */
const SECRET_ENV_RE = /secret|token|passw|private|api_?key|signing/i;
/** Set by hsd for every step; a step may not override them. */
export const RESERVED_STEP_ENV: readonly string[] = Object.freeze([
  "HOMESTAK_ROOT", "HSD_LEVEL_NAME", "HSD_LEVEL_PATH", "HSD_LEVEL_DEPTH", "HSD_PARENT_ADDRESS", "HSD_STEP",
  // The reboot protocol (src/homestak/step-reboot.ts).
  "HSD_REBOOT_REQUEST", "HSD_STEP_REBOOTS",
]);
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

/** A relative path that stays under its base ("" when it does not). */
function underRoot(p: string): string {
  if (isAbsolute(p)) return "";
  const n = normalize(p).replace(/\/+$/, "");
  if (n === ".." || n.startsWith("../")) return "";
  return n === "" ? "." : n;
}

/** What the loader knows of the host for homestak.user: its users and whether hsd can act as another one. */
export interface HomestakHost {
  /** The homestak user's home on an installed system: the default homestak.root there. */
  readonly home?: string;
  /** The default homestak.user (an installed system whose `homestak` user exists). */
  readonly defaultUser?: string;
  readonly userExists: (name: string) => boolean;
  /** hsd's own uid (only root can hand files to another user). */
  readonly uid: number;
  readonly uidOf: (name: string) => number | undefined;
}

export function parseHomestak(
  r: Reader, top: Raw, levelRoot: string, host: HomestakHost,
): HsdConfig["homestak"] {
  const homestakHome = host.home;
  const h = r.map(top.homestak, ["homestak"], ["root", "layout", "user"]);
  const rootStr = r.str(h.root, ["homestak", "root"], "");
  const root = rootStr ? (isAbsolute(rootStr) ? rootStr : resolve(levelRoot, rootStr)) : homestakHome ?? resolve(levelRoot, DEFAULTS.homestakDir);
  const layoutRaw = r.map(h.layout, ["homestak", "layout"], Object.keys((h.layout as Raw | undefined) ?? {}));
  const layout: Record<string, string> = { ...DEFAULT_LAYOUT };
  for (const [repo, v] of Object.entries(layoutRaw)) {
    const p = underRoot(r.str(v, ["homestak", "layout", repo], ""));
    if (!p || p === ".") { r.fail(["homestak", "layout", repo], "must be a relative path under the homestak root"); continue; }
    layout[repo] = p;
  }
  const user = r.str(h.user, ["homestak", "user"], host.defaultUser ?? "", USER_RE) || null;
  if (user !== null && h.user !== undefined) {
    // Only a named user is checked here; the default is chosen only when it exists.
    if (!host.userExists(user)) r.fail(["homestak", "user"], `no local user ${user} on this host`);
    else if (host.uid !== 0 && host.uidOf(user) !== host.uid) r.fail(["homestak", "user"], `handing the trees to ${user} needs hsd to run as root`);
  }
  return Object.freeze({ root, layout: Object.freeze(layout), user });
}

/** Checks that the repos this level fetches get distinct, non-nested working trees. */
export function checkLayout(r: Reader, layout: Readonly<Record<string, string>>, repoNames: readonly string[]): void {
  const seen = new Map<string, string>();
  for (const name of repoNames) {
    // Own keys only: a repo named like an Object.prototype member ("constructor") has no layout entry.
    const p = Object.hasOwn(layout, name) ? layout[name]! : name;
    for (const [q, other] of seen) {
      if (q === p || q.startsWith(`${p}/`) || p.startsWith(`${q}/`)) {
        r.fail(["homestak", "layout", name], `working tree ${p} collides with ${other}'s (${q})`);
      }
    }
    seen.set(p, name);
  }
}

export function parseConfigureSteps(
  r: Reader, top: Raw, ctx: { repoNames: readonly string[]; configureBudgetMs: number },
): HsdConfig["configure"] {
  const c = r.map(top.configure, ["configure"], ["steps"]);
  if (c.steps === undefined || c.steps === null) return Object.freeze({ steps: Object.freeze([]) });
  if (!Array.isArray(c.steps)) {
    r.fail(["configure", "steps"], "must be a list of steps");
    return Object.freeze({ steps: Object.freeze([]) });
  }
  const names = new Set<string>();
  const steps = c.steps.map((raw, i): ConfigureStep => {
    const at = ["configure", "steps", i];
    const s = r.map(raw, at, ["name", "run", "cwd", "env", "budget", "user", "when"]);
    const name = r.str(s.name, [...at, "name"], "", STEP_NAME_RE);
    if (!name) r.fail([...at, "name"], "is required");
    if (names.has(name)) r.fail([...at, "name"], `duplicate step name ${JSON.stringify(name)}`);
    else if (RESERVED_STEP_NAMES.includes(name)) r.fail([...at, "name"], `${JSON.stringify(name)} is the name of hsd's own step (the journal keeps one record per name): choose another`);
    names.add(name);
    if (!Array.isArray(s.run) || s.run.length === 0) r.fail([...at, "run"], "must be a non-empty list (argv; use [sh, -c, \"...\"] for a shell)");
    const run = (Array.isArray(s.run) ? s.run as unknown[] : []).map((a, k) => {
      // YAML reads `true` or `1` as scalars of other types; as argv they are words.
      if (typeof a !== "string" && typeof a !== "number" && typeof a !== "boolean") r.fail([...at, "run", k], "must be a string");
      return String(a);
    });
    if (run[0] === "") r.fail([...at, "run", 0], "the program must not be empty");
    const cwdRaw = r.str(s.cwd, [...at, "cwd"], ".");
    let cwd: string;
    if (cwdRaw === "." || cwdRaw.includes("/")) {
      cwd = underRoot(cwdRaw);
      if (!cwd) r.fail([...at, "cwd"], "must be a repo name or a relative path under the homestak root");
    } else {
      if (!ctx.repoNames.includes(cwdRaw)) r.fail([...at, "cwd"], `unknown repo ${JSON.stringify(cwdRaw)} (expected one of: ${ctx.repoNames.join(", ")}, or a path such as iac/ansible)`);
      cwd = cwdRaw;
    }
    const envRaw = r.map(s.env, [...at, "env"], Object.keys((s.env as Raw | undefined) ?? {}));
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(envRaw)) {
      if (!ENV_NAME_RE.test(k)) r.fail([...at, "env", k], "invalid environment variable name");
      if (RESERVED_STEP_ENV.includes(k)) r.fail([...at, "env", k], "is set by hsd for every step");
      if (SECRET_ENV_RE.test(k)) r.fail([...at, "env", k], "looks like a secret; steps read secrets from config/secrets.yaml, never the environment");
      env[k] = r.str(v, [...at, "env", k], "");
    }
    const budgetMs = r.duration(s.budget, [...at, "budget"], Math.min(DEFAULTS.stepBudgetMs, ctx.configureBudgetMs));
    if (budgetMs <= 0) r.fail([...at, "budget"], "must be more than 0");
    if (budgetMs > ctx.configureBudgetMs) r.fail([...at, "budget"], "must fit in budgets.configure");
    const user = r.str(s.user, [...at, "user"], "");
    if (user && !USER_RE.test(user)) r.fail([...at, "user"], `invalid user name ${JSON.stringify(user)}`);
    const w = r.map(s.when, [...at, "when"], ["provider", "min_depth", "max_depth"]);
    const when: { provider?: ProviderName; minDepth?: number; maxDepth?: number } = {};
    if (w.provider !== undefined) when.provider = r.str(w.provider, [...at, "when", "provider"], "", /^(local|pve)$/) as ProviderName;
    if (w.min_depth !== undefined) when.minDepth = r.int(w.min_depth, [...at, "when", "min_depth"], 1, 1, 64);
    if (w.max_depth !== undefined) when.maxDepth = r.int(w.max_depth, [...at, "when", "max_depth"], 64, 1, 64);
    if (when.minDepth !== undefined && when.maxDepth !== undefined && when.minDepth > when.maxDepth) {
      r.fail([...at, "when", "min_depth"], "is above max_depth: the step could never run");
    }
    return Object.freeze({
      name, run: Object.freeze(run), cwd, env: Object.freeze(env), budgetMs, user, when: Object.freeze(when),
    });
  });
  return Object.freeze({ steps: Object.freeze(steps) });
}

/** configure.steps as hsd.yaml keys: what a parent writes into its child's config (durations in ms). */
export function stepsToYaml(steps: readonly ConfigureStep[]): Raw[] {
  return steps.map((s) => ({
    name: s.name, run: [...s.run], cwd: s.cwd, ...(Object.keys(s.env).length ? { env: { ...s.env } } : {}),
    budget: `${s.budgetMs}ms`, ...(s.user ? { user: s.user } : {}),
    ...(Object.keys(s.when).length ? {
      when: {
        ...(s.when.provider ? { provider: s.when.provider } : {}),
        ...(s.when.minDepth !== undefined ? { min_depth: s.when.minDepth } : {}),
        ...(s.when.maxDepth !== undefined ? { max_depth: s.when.maxDepth } : {}),
      },
    } : {}),
  }));
}
