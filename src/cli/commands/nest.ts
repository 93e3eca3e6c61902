// `hsctl nest`: build levels below the local hsd and watch them come up. Starts
// a level-0 hsd for the user when none is reachable. Registered in
// commands/index.ts.
// Imported by: src/cli/commands.

import { InvalidArgumentError } from "../../domain/errors.js";
import { readFile, stat } from "node:fs/promises";
import { resolve } from "node:path";
import type { Command } from "../command.js";
import { streamEvents } from "./stream-events.js";
import { ensureDaemon } from "./ensure-daemon.js";
import { isProviderName, PROVIDER_NAMES } from "../../domain/providers.js";
import { ISOLATION_MODES, isIsolationMode } from "../../providers/local/local-options.js";

function intOpt(v: unknown, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

const MAX_MANIFEST_BYTES = 256 * 1024;

/** -M NAME (level 0 reads it from its site-config) or --manifest FILE (read here); never with --depth/--width. */
async function manifestArg(v: Record<string, unknown>, cwd: string): Promise<{ name?: string; yaml?: string; file?: string; prune?: boolean } | undefined> {
  const name = v["manifest-name"] as string | undefined;
  const file = v.manifest as string | undefined;
  if (name === undefined && file === undefined) {
    if (v.prune) throw new InvalidArgumentError("--prune needs -M NAME or --manifest FILE", { details: { field: "prune" } });
    return undefined;
  }
  const prune = v.prune === true ? { prune: true } : {};
  if (name !== undefined && file !== undefined) throw new InvalidArgumentError("give -M NAME or --manifest FILE, not both", { details: { field: "manifest" } });
  if (v.depth !== undefined || v.width !== undefined) throw new InvalidArgumentError("a manifest sets the tree's shape: drop --depth/--width", { details: { field: "depth" } });
  if (name !== undefined) {
    if (name === "") throw new InvalidArgumentError("-M needs a manifest name", { details: { field: "manifest-name" } });
    return { name, ...prune };
  }
  const path = resolve(cwd, file!);
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) throw new InvalidArgumentError(`--manifest ${path}: no such file`, { details: { field: "manifest", file: path } });
  if (st.size > MAX_MANIFEST_BYTES) throw new InvalidArgumentError(`--manifest ${path}: larger than ${MAX_MANIFEST_BYTES} bytes`, { details: { field: "manifest", file: path } });
  return { yaml: await readFile(path, "utf8"), file: path, ...prune };
}

export const nestCommand: Command = {
  name: "nest",
  summary: "build N nested levels below this one, live",
  help: `Usage: hsctl nest --depth N [--width W] [--provider local|pve] [--isolation process|netns] [--json]
       hsctl nest -M NAME | --manifest FILE [--prune] [--provider ...] [--isolation ...] [--json]

Builds N levels below the local hsd: each level's hsd creates the next level,
installs hsd in it, lets it clone the repos over SSH git, hands it its scoped
secrets and asks it to build the rest. Progress streams up live.

If no hsd is reachable (and no --socket/--root/HSD_SOCKET names one), hsctl
starts a level-0 hsd for you under $HSD_ROOT (default ./.hsd); with no repos
configured it exports a generated demo set. \`hsctl destroy\` stops it again.

With -M NAME, level 0 builds the tree site-config's manifests/NAME.yaml
describes (homestak's manifest schema_version 2; --manifest FILE takes any
file): each node becomes a level named by its manifest name, built by its
parent's hsd, sized from its site-config preset (disk overrides it). The
manifest is checked first, against site-config's defs/manifest.schema.json
and hsd's rules (DNS-label names, known parents, no cycles, children only
under pve nodes, unique vmids, known presets, specs and images, no ct); every
problem is listed with its file, node and field, and nothing is built.

Running a manifest again resumes it and reconciles an edited one: nodes it
now names are built; levels it no longer names are destroyed only with
--prune. Its settings.on_error says what a failed node does: stop (default:
no further sibling starts), continue (siblings go on; every failure is
listed), rollback (the levels this run created are destroyed, deepest
first). Either way the run exits 1.

Re-running the same nest resumes: finished phases are reported as skipped,
a dead level is restarted from its install phase.

Options:
  -M, --manifest-name NAME
                     build site-config's manifests/NAME.yaml (e.g. n3-deep)
  --manifest FILE    build the manifest in FILE
  --prune            with a manifest: destroy the levels it built earlier but
                     no longer names (without it they are left alone)
  --depth N          levels to build below this one (1..8, default 1)
  --width W          children per level (1..8, default 1)
  --provider NAME    local (default: a process per level) or pve (a VM per level)
  --isolation MODE   process (default) or netns (root: a network namespace and
                     veth /30 per level, so a level reaches only its parent)
  --json             one JSON object per event (JSON Lines)

Output: a live tree on a terminal; piped, one line per phase change and at
most one progress line per level per second (--json keeps every event); then
a table of every level x phase with its time against its budget. Exit 1
names the level and phase that failed.

Examples:
  hsctl nest --depth 3
  hsctl nest --depth 2 --width 3
  hsctl nest -M n3-deep
  sudo hsctl nest --depth 3 --isolation netns --json | jq -c 'select(.kind=="failed")'
`,
  options: {
    depth: { type: "string" }, width: { type: "string" }, provider: { type: "string" },
    isolation: { type: "string" }, json: { type: "boolean" },
    "manifest-name": { type: "string", short: "M" }, manifest: { type: "string" }, prune: { type: "boolean" },
  },
  async run(args, io) {
    const depth = intOpt(args.values.depth, "depth", 1, 1, 8);
    const width = intOpt(args.values.width, "width", 1, 1, 8);
    const provider = (args.values.provider as string | undefined) ?? "";
    if (provider && !isProviderName(provider)) throw new InvalidArgumentError(`--provider must be ${PROVIDER_NAMES.join(" or ")}, got ${JSON.stringify(provider)}`);
    const iso = (args.values.isolation as string | undefined) ?? "process";
    if (!isIsolationMode(iso)) throw new InvalidArgumentError(`--isolation must be ${ISOLATION_MODES.join(" or ")}, got ${JSON.stringify(iso)}`);
    const manifest = await manifestArg(args.values, io.cwd);
    const conn = await ensureDaemon(args, io, { start: true });
    const stream = conn.nest.nest({
      depth, width, provider, options: { isolation: iso }, ...(manifest ? { manifest } : {}),
    }, { signal: io.signal });
    return (await streamEvents(stream, io, Boolean(args.values.json), "nest")).code;
  },
};
