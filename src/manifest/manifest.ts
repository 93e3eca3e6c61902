// A homestak manifest (schema_version 2) checked before anything is built: the
// document against site-config's own JSON schema (ajv), then hsd's rules
// (DNS-label names, parents exist, no cycles, only pve nodes have children,
// unique vmids, presets/specs/images known, ct unsupported). Every problem is
// collected; one ManifestInvalid error lists them all, each naming file, node
// and field. Pure: the caller supplies the texts and the known names.
// Imported by: src/manifest, src/daemon.

import { Ajv2020 } from "ajv/dist/2020.js";
import { parseDocument } from "yaml";
import { ManifestInvalidError } from "../domain/errors.js";
import { isNodeName, type BuildPlan, type OnError, type PlannedNode } from "../domain/plan.js";

export type { OnError, PlannedNode } from "../domain/plan.js";

export interface Manifest {
  readonly name: string;
  readonly file: string;
  readonly onError: OnError;
  readonly nodes: readonly PlannedNode[];
}

export interface ManifestProblem {
  readonly file: string;
  /** The node's name (or "#<index>" when it has none); "" for a manifest-level field. */
  readonly node: string;
  /** Dotted path inside the node (or the manifest), e.g. "parent", "settings.on_error". */
  readonly field: string;
  readonly message: string;
}

export interface Preset { readonly cores: number; readonly memory: number; readonly disk: number }

/** What the manifest is checked against: site-config's schema and names, and the images level 0 has. */
export interface ManifestContext {
  /** defs/manifest.schema.json, parsed. */
  readonly schema: object;
  readonly presets: Readonly<Record<string, Preset>>;
  readonly specs: readonly string[];
  /** Image names the building level can make nodes from. */
  readonly images: readonly string[];
}

const MAX_MANIFEST_BYTES = 256 * 1024;

/** Parses and validates manifest text; throws ManifestInvalid listing every problem. */
export function validateManifest(text: string, file: string, ctx: ManifestContext): Manifest {
  const problems: ManifestProblem[] = [];
  const add = (node: string, field: string, message: string) => problems.push({ file, node, field, message });
  const fail = () => new ManifestInvalidError(
    `${file}: ${problems.length} problem${problems.length === 1 ? "" : "s"}${problems.map((p) => `\n  ${p.node ? `node ${p.node}` : "manifest"}${p.field ? `, ${p.field}` : ""}: ${p.message}`).join("")}`,
    { details: { file, errors: problems } },
  );
  if (Buffer.byteLength(text) > MAX_MANIFEST_BYTES) {
    add("", "", `larger than ${MAX_MANIFEST_BYTES} bytes`);
    throw fail();
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) add("", "", `not valid YAML: ${e.code} at line ${e.linePos?.[0]?.line ?? "?"}`);
    throw fail();
  }
  const data = doc.toJS() as unknown;
  const rawNodes = isObj(data) && Array.isArray(data.nodes) ? (data.nodes as unknown[]) : [];
  const nodeLabel = (i: number) => {
    const n = rawNodes[i];
    return isObj(n) && typeof n.name === "string" && n.name !== "" ? n.name : `#${i}`;
  };

  // 1. The schema, as site-config defines it.
  let validate;
  try {
    validate = new Ajv2020({ allErrors: true, strict: false }).compile(ctx.schema);
  } catch (err) {
    add("", "$schema", `site-config's manifest schema does not compile: ${(err as Error).message}`);
    throw fail();
  }
  if (!validate(data)) {
    for (const e of validate.errors ?? []) {
      const parts = e.instancePath.split("/").slice(1);
      const extra = e.keyword === "additionalProperties" ? String((e.params as { additionalProperty?: string }).additionalProperty) : undefined;
      const required = e.keyword === "required" ? String((e.params as { missingProperty?: string }).missingProperty) : undefined;
      const tail = [...parts, ...(extra ? [extra] : []), ...(required ? [required] : [])];
      if (tail[0] === "nodes" && tail.length >= 2 && /^\d+$/.test(tail[1]!)) {
        add(nodeLabel(Number(tail[1])), tail.slice(2).join("."), e.message ?? e.keyword);
      } else {
        add("", tail.join("."), e.message ?? e.keyword);
      }
    }
    throw fail();
  }

  // 2. hsd's own rules, on a document the schema accepted.
  const m = data as { name: string; nodes: Record<string, unknown>[]; settings?: { on_error?: OnError }; execution?: { settings?: { on_error?: OnError } } };
  const byName = new Map<string, Record<string, unknown>>();
  const vmids = new Map<number, string>();
  m.nodes.forEach((n, i) => {
    const name = n.name as string;
    const label = nodeLabel(i);
    if (!isNodeName(name)) add(label, "name", "must be a DNS label: lower-case letters, digits and '-', 1-63 characters, not starting or ending with '-'");
    if (byName.has(name)) add(label, "name", `duplicate node name (also node #${m.nodes.indexOf(byName.get(name)!)})`);
    else byName.set(name, n);
    if (n.type === "ct") add(label, "type", "containers (type ct) are not supported by hsd; use type vm");
    for (const f of ["spec", "preset", "image"] as const) if (n[f] === undefined && n.type !== "ct") add(label, f, `a ${String(n.type)} node needs ${f}`);
    if (typeof n.preset === "string" && !ctx.presets[n.preset]) add(label, "preset", `unknown preset ${JSON.stringify(n.preset)} (site-config presets/: ${Object.keys(ctx.presets).sort().join(", ") || "none"})`);
    if (typeof n.spec === "string" && !ctx.specs.includes(n.spec)) add(label, "spec", `unknown spec ${JSON.stringify(n.spec)} (site-config specs/: ${[...ctx.specs].sort().join(", ") || "none"})`);
    if (typeof n.image === "string" && !ctx.images.includes(n.image)) add(label, "image", `unknown image ${JSON.stringify(n.image)} (available: ${[...ctx.images].sort().join(", ") || "none"})`);
    if (typeof n.vmid === "number") {
      const other = vmids.get(n.vmid);
      if (other !== undefined) add(label, "vmid", `vmid ${n.vmid} is also node ${other}'s`);
      else vmids.set(n.vmid, label);
    }
  });
  for (const [name, n] of byName) {
    const parent = n.parent;
    if (parent === undefined || parent === null) continue;
    const p = byName.get(parent as string);
    if (!p) { add(name, "parent", `no node is named ${JSON.stringify(parent)}`); continue; }
    if (p.type !== "pve") add(name, "parent", `parent ${JSON.stringify(parent)} is type ${String(p.type)}; only pve nodes have children`);
  }
  // A cycle: following parents from a node never reaches a root.
  const inCycle = new Set<string>();
  for (const name of byName.keys()) {
    const seen = new Set<string>();
    let cur: string | undefined = name;
    while (cur !== undefined && byName.has(cur) && !seen.has(cur)) {
      seen.add(cur);
      const par: unknown = byName.get(cur)!.parent;
      cur = typeof par === "string" ? par : undefined;
    }
    if (cur !== undefined && seen.has(cur) && cur === name) inCycle.add(name);
  }
  for (const name of inCycle) add(name, "parent", "parents form a cycle: the node never reaches a root");
  if (problems.length > 0) throw fail();

  const onError = m.settings?.on_error ?? m.execution?.settings?.on_error ?? "stop";
  return Object.freeze({
    name: m.name, file, onError,
    nodes: m.nodes.map((n) => {
      const preset = ctx.presets[n.preset as string]!;
      return Object.freeze({
        name: n.name as string,
        type: n.type as "pve" | "vm",
        ...(typeof n.parent === "string" ? { parent: n.parent } : {}),
        spec: n.spec as string, preset: n.preset as string, image: n.image as string,
        vmid: typeof n.vmid === "number" ? n.vmid : 0,
        cores: preset.cores, memoryMb: preset.memory,
        diskGb: typeof n.disk === "number" ? n.disk : preset.disk,
      });
    }),
  });
}

/** The plan level 0 builds: every node, parents before children. */
export function manifestPlan(m: Manifest): BuildPlan {
  const depth = (n: PlannedNode): number => {
    let d = 0;
    for (let p = n.parent; p; p = m.nodes.find((x) => x.name === p)?.parent) d++;
    return d;
  };
  const nodes = [...m.nodes].sort((a, b) => depth(a) - depth(b));
  return { manifest: m.name, onError: m.onError, nodes };
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
