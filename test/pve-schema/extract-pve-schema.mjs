#!/usr/bin/env node
// Regenerates src/providers/pve/pve-schema.ts from the Proxmox API viewer's data
// (pve-docs api-viewer/apidata.js, one file per PVE release), keeping only facts:
// parameter names, types, formats, patterns, enums, limits and `returns`; no
// descriptions. A maintainer's tool, run by hand when hsd adopts a PVE release:
//   node test/pve-schema/extract-pve-schema.mjs 8.0.4=/tmp/apidata-8.0.4.js ... 9.1.3=/tmp/apidata-9.1.3.js > src/providers/pve/pve-schema.ts
// The last file is the schema; the earlier ones give each parameter's `since`.
// Get the files with: git -C pve-docs show <bump commit>:api-viewer/apidata.js

import { readFileSync } from "node:fs";

/** The endpoints hsd calls or its simulator serves; keep in step with test/pve-sim/pve-sim-api.ts. */
const ENDPOINTS = [
  "GET /version", "GET /nodes", "GET /cluster/nextid",
  "GET /nodes/{node}/qemu", "POST /nodes/{node}/qemu", "DELETE /nodes/{node}/qemu/{vmid}",
  "POST /nodes/{node}/qemu/{vmid}/clone", "POST /nodes/{node}/qemu/{vmid}/template",
  "GET /nodes/{node}/qemu/{vmid}/config", "POST /nodes/{node}/qemu/{vmid}/config", "PUT /nodes/{node}/qemu/{vmid}/config",
  "PUT /nodes/{node}/qemu/{vmid}/resize",
  "POST /nodes/{node}/qemu/{vmid}/status/start", "POST /nodes/{node}/qemu/{vmid}/status/stop",
  "POST /nodes/{node}/qemu/{vmid}/status/shutdown", "GET /nodes/{node}/qemu/{vmid}/status/current",
  "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
  "GET /nodes/{node}/tasks/{upid}/status", "GET /nodes/{node}/tasks/{upid}/log",
  "GET /storage/{storage}", "PUT /storage/{storage}", "GET /nodes/{node}/storage/{storage}/content",
  "GET /nodes/{node}/storage/{storage}/status",
  "POST /access/users/{userid}/token/{tokenid}", "DELETE /access/users/{userid}/token/{tokenid}",
];

/** Schema keys that carry facts; everything else (description, typetext, renderer, ...) is left out. */
const KEEP = ["type", "optional", "format", "pattern", "enum", "minimum", "maximum", "minLength", "maxLength",
  "default_key", "alias", "keyAlias", "requires", "items", "properties", "additionalProperties"];

function load(file) {
  const src = readFileSync(file, "utf8");
  return new Function(`${src};\nreturn apiSchema;`)();
}

function find(tree, path) {
  for (const n of tree) {
    if (n.path === path) return n;
    if (n.children) { const r = find(n.children, path); if (r) return r; }
  }
  return undefined;
}

/**
 * Perl stringifies qr// as (?^:...): the JS equivalent is the group's body, and
 * nested ones (and Perl's atomic groups) become plain non-capturing groups.
 */
function jsPattern(p) {
  const m = /^\(\?\^[a-z]*:(.*)\)$/s.exec(p);
  return (m ? m[1] : p).replace(/\(\?\^[a-z]*:/g, "(?:").replace(/\(\?>/g, "(?:");
}

function clean(s) {
  if (!s || typeof s !== "object") return s;
  const out = {};
  for (const k of KEEP) {
    if (!(k in s)) continue;
    const v = s[k];
    if (k === "optional" || k === "default_key") { if (v) out[k] = true; }
    else if (k === "minimum" || k === "maximum" || k === "minLength" || k === "maxLength") out[k] = Number(v);
    else if (k === "pattern") out[k] = jsPattern(String(v));
    else if (k === "additionalProperties") out[k] = typeof v === "object" ? clean(v) : Boolean(v);
    else if (k === "format" && typeof v === "object") out[k] = Object.fromEntries(Object.keys(v).sort().map((fk) => [fk, clean(v[fk])]));
    else if (k === "properties") out[k] = Object.fromEntries(Object.keys(v).sort().map((pk) => [pk, clean(v[pk])]));
    else if (k === "items") out[k] = clean(v);
    else out[k] = v;
  }
  return out;
}

const args = process.argv.slice(2).map((a) => { const i = a.indexOf("="); return { version: a.slice(0, i), tree: load(a.slice(i + 1)) }; });
if (args.length === 0) { console.error("usage: extract-pve-schema.mjs VERSION=apidata.js ... (oldest first)"); process.exit(2); }
const latest = args.at(-1);

const endpoints = {};
for (const ep of ENDPOINTS) {
  const [method, path] = ep.split(" ");
  const info = find(latest.tree, path)?.info?.[method];
  if (!info) throw new Error(`${ep} is not in the ${latest.version} schema`);
  const props = info.parameters?.properties ?? {};
  const params = {};
  for (const name of Object.keys(props).sort()) {
    const spec = clean(props[name]);
    const since = args.find((a) => a.tree && find(a.tree, path)?.info?.[method]?.parameters?.properties?.[name])?.version;
    if (since && since !== args[0].version) spec.since = since;
    params[name] = spec;
  }
  endpoints[ep] = { params, returns: clean(info.returns ?? {}) };
}

// The VM options common to create and both config writes are emitted once (QEMU_OPTIONS).
const vmEndpoints = Object.keys(endpoints).filter((ep) => "net[n]" in endpoints[ep].params);
const common = {};
for (const [name, spec] of Object.entries(endpoints[vmEndpoints[0]].params)) {
  if (vmEndpoints.every((ep) => JSON.stringify(endpoints[ep].params[name]) === JSON.stringify(spec))) common[name] = spec;
}
for (const ep of vmEndpoints) for (const name of Object.keys(common)) delete endpoints[ep].params[name];

// Shared property-string formats (the drive formats repeat for every bus) are emitted once.
const shared = new Map();
const json = (v) => JSON.stringify(v);
for (const e of [...Object.values(endpoints), { params: common, returns: {} }]) {
  for (const spec of [...Object.values(e.params), ...Object.values(e.returns.properties ?? {})]) {
    if (spec.format && typeof spec.format === "object") {
      const key = json(spec.format);
      if (!shared.has(key)) shared.set(key, `F${shared.size}`);
    }
  }
}
const render = (v, depth) => {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    const pad = "  ".repeat(depth + 1);
    const entries = Object.entries(v).map(([k, x]) => {
      if (k === "format" && x && typeof x === "object" && shared.has(json(x))) return `${JSON.stringify(k)}: ${shared.get(json(x))}`;
      return `${JSON.stringify(k)}: ${render(x, depth + 1)}`;
    });
    const one = `{ ${entries.join(", ")} }`;
    if (one.length < 140 && !one.includes("\n")) return entries.length ? one : "{}";
    return `{\n${entries.map((e) => `${pad}${e}`).join(",\n")},\n${"  ".repeat(depth)}}`;
  }
  return JSON.stringify(v);
};

const out = [];
out.push(`// Proxmox VE API schema facts for every endpoint hsd's pve provider calls and the
// test simulator serves: parameters (type, format, pattern, enum, limits,
// required), the PVE release that added each newer one (since), and returns.
// GENERATED by test/pve-schema/extract-pve-schema.mjs from the API viewer's
// apidata.js of pve-docs ${args.map((a) => a.version).join(", ")}; do not edit by hand.
// Data only, no imports: pve-api.ts derives the client's request types from it
// (type-only import, so none of it enters the bundle); test/pve-sim validates with it.
// Imported by: src/providers/pve.
`);
out.push(`/** The pve-docs release this table was extracted from. */`);
out.push(`export const PVE_SCHEMA_RELEASE = ${JSON.stringify(latest.version)};`);
out.push(`/** The oldest release compared: parameters without \`since\` exist there already. */`);
out.push(`export const PVE_SCHEMA_BASELINE = ${JSON.stringify(args[0].version)};\n`);
// The disk formats (ide/sata/scsi/virtio) share most of their keys: emitted once (DRIVE_KEYS).
const drives = [...shared.keys()].map((k) => JSON.parse(k)).filter((f) => "aio" in f && "file" in f);
const driveKeys = {};
for (const [k, v] of Object.entries(drives[0] ?? {})) if (drives.every((f) => JSON.stringify(f[k]) === JSON.stringify(v))) driveKeys[k] = v;
if (drives.length > 1) out.push(`/** Keys every disk bus's property string accepts. */\nconst DRIVE_KEYS = ${render(driveKeys, 0)} as const;\n`);
for (const [key, name] of shared) {
  const f = JSON.parse(key);
  if (drives.length > 1 && "aio" in f && "file" in f) {
    const own = Object.fromEntries(Object.entries(f).filter(([k]) => !(k in driveKeys)));
    out.push(`const ${name} = ${render(own, 0).replace(/^\{/, "{\n  ...DRIVE_KEYS,")} as const;\n`);
  } else out.push(`const ${name} = ${render(f, 0)} as const;\n`);
}
out.push(`/** VM options shared by ${vmEndpoints.join(", ")}. */`);
out.push(`const QEMU_OPTIONS = ${render(common, 0)} as const;\n`);
const body = render(endpoints, 0).replace(/("(?:POST|PUT) [^"]+": \{\n\s*"params": \{)/g, (m, head) => {
  const ep = /"([^"]+)"/.exec(head)[1];
  return vmEndpoints.includes(ep) ? `${head}\n      ...QEMU_OPTIONS,` : m;
});
out.push(`export const PVE_SCHEMA = ${body} as const;`);
process.stdout.write(`${out.join("\n")}\n`);
