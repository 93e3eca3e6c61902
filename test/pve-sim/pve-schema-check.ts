// Validates one API request against PVE's schema (src/providers/pve/pve-schema.ts)
// the way pve-common's PVE::JSONSchema does, with its messages: unknown
// parameters, missing ones, types, named formats and property strings
// (net0, scsi0 with import-from, cicustom, ipconfig0, ...), patterns, limits, enums.
// Test-only: the simulator answers 400 with these errors; test/pve asserts with it.

import { PVE_SCHEMA, PVE_SCHEMA_BASELINE } from "../../src/providers/pve/pve-schema.js";
import { FORMATS, HASH_FORMATS, FormatError, type KeySpec } from "./pve-schema-formats.js";

export type SchemaKey = keyof typeof PVE_SCHEMA;
export interface ParamSpec extends KeySpec { readonly since?: string }
interface EndpointSpec { readonly params: Readonly<Record<string, ParamSpec>> }

/** How many of each "x[n]" exist (qemu-server's MAX_* constants). */
export const INDEXED: Readonly<Record<string, number>> = {
  net: 32, ipconfig: 32, scsi: 31, ide: 4, sata: 6, virtio: 16, unused: 256, usb: 14, hostpci: 16,
  serial: 4, parallel: 3, numa: 8, virtiofs: 10,
};

export const MSG = {
  unknown: "property is not defined in schema and the schema does not allow additional properties",
  missing: "property is missing and it is not optional",
  pattern: "value does not match the regex pattern",
} as const;

/** The schema of "METHOD /template", or undefined when PVE has no such endpoint in our table. */
export function endpointSpec(key: string): EndpointSpec | undefined {
  return (PVE_SCHEMA as unknown as Record<string, EndpointSpec>)[key];
}

/** 8.3.2 -> comparable [8, 3, 2]. */
function ver(v: string): number[] { return v.split(/[.-]/).map((x) => Number(x) || 0); }
export function versionAtLeast(have: string, want: string): boolean {
  const a = ver(have), b = ver(want);
  for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
}

/** The concrete parameter names of an endpoint on a PVE release (net[n] -> net0..net31). */
export function expandParams(spec: EndpointSpec, release: string = PVE_SCHEMA_BASELINE): Map<string, ParamSpec> {
  const out = new Map<string, ParamSpec>();
  for (const [name, p] of Object.entries(spec.params)) {
    if (p.since && !versionAtLeast(release, p.since)) continue;
    const m = /^(.+)\[n\]$/.exec(name);
    if (!m) { out.set(name, p); continue; }
    const n = INDEXED[m[1]!];
    if (n === undefined) throw new Error(`no count for ${name}: add it to INDEXED`);
    for (let i = 0; i < n; i++) out.set(`${m[1]}${i}`, p);
  }
  return out;
}

/**
 * PVE's errors map for these parameters (path ones included, as PVE merges
 * them), or undefined when the request is valid on that release.
 */
export function validateRequest(key: string, params: Readonly<Record<string, string>>, release?: string): Record<string, string> | undefined {
  const spec = endpointSpec(key);
  if (!spec) throw new Error(`${key} is not in PVE's schema table`);
  const props = expandParams(spec, release);
  const errors: Record<string, string> = {};
  for (const [name, p] of props) checkProp(params[name], p, name, errors);
  for (const name of Object.keys(params)) if (!props.has(name)) addError(errors, name, MSG.unknown);
  return Object.keys(errors).length ? errors : undefined;
}

export function addError(errors: Record<string, string>, path: string, msg: string): void {
  // PVE joins a second message for one path with a literal backslash-n.
  errors[path] = errors[path] ? `${errors[path]}\\n${msg}` : msg;
}

function isNumber(v: string): boolean { return /^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$/.test(v); }

function checkType(path: string, type: string | undefined, v: string, errors: Record<string, string>): boolean {
  const bad = () => { addError(errors, path, `type check ('${type}') failed - got '${v}'`); return false; };
  if (type === "boolean") return v === "1" || v === "0" ? true : bad();
  if (type === "integer") return /^[+-]?\d+$/.test(v) ? true : bad();
  if (type === "number") return isNumber(v) ? true : bad();
  return true;
}

/** check_prop for a scalar value (every form parameter is one). */
export function checkProp(value: string | undefined, s: KeySpec, path: string, errors: Record<string, string>): void {
  if (s.alias) return;
  if (value === undefined) {
    if (!s.optional) addError(errors, path, MSG.missing);
    return;
  }
  if (!checkType(path, s.type, value, errors)) return;
  if (s.format !== undefined) {
    try { checkFormat(s.format, value, path); } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      addError(errors, path, `invalid format - ${e.text()}`);
      return;
    }
  }
  // Perl interpolates the pattern bare: m/^$pattern$/.
  if (s.pattern !== undefined && !new RegExp(`^${s.pattern}$`).test(value)) { addError(errors, path, MSG.pattern); return; }
  if (s.maxLength !== undefined && value.length > s.maxLength) { addError(errors, path, `value may only be ${s.maxLength} characters long`); return; }
  if (s.minLength !== undefined && value.length < s.minLength) { addError(errors, path, `value must be at least ${s.minLength} characters long`); return; }
  if (isNumber(value)) {
    if (s.maximum !== undefined && Number(value) > s.maximum) { addError(errors, path, `value must have a maximum value of ${s.maximum}`); return; }
    if (s.minimum !== undefined && Number(value) < s.minimum) { addError(errors, path, `value must have a minimum value of ${s.minimum}`); return; }
  }
  if (s.enum && !s.enum.includes(value)) addError(errors, path, `value '${value}' does not have a value in the enumeration '${s.enum.join(", ")}'`);
}

/** check_format: a named format (code or hash), a -list of one, or an inline property-string schema. */
export function checkFormat(format: string | Readonly<Record<string, KeySpec>>, value: string, path: string): void {
  if (typeof format === "object") { parsePropertyString(format, value, path); return; }
  if (format === "regex" || format === "string") return;
  const m = /^(.*?)(?:-(list|opt))?$/.exec(format)!;
  const name = m[1]!;
  const hash = HASH_FORMATS[name];
  const fn = FORMATS[name];
  if (!hash && fn === undefined) throw new Error(`format '${format}' has no checker: add it to pve-schema-formats.ts`);
  if (m[2] === "list") { for (const v of value.split(/[,;\0\s]+/).filter(Boolean)) fn!(v); return; }
  if (m[2] === "opt") { if (value) fn!(value); return; }
  if (hash) { const r = parsePropertyString(hash.keys, value, path); hash.validate?.(r); return; }
  fn!(value);
}

/** parse_property_string + check_object: "virtio=BC:..,bridge=vmbr0" against its keys. */
export function parsePropertyString(keys: Readonly<Record<string, KeySpec>>, data: string, path: string): Record<string, string> {
  const res: Record<string, string> = {};
  let defaultKey: string | undefined;
  for (const part of data.split(",")) {
    if (/^\s*$/.test(part)) continue;
    const kv = /^([^=]+)=(.+)$/s.exec(part);
    if (kv) {
      let k = kv[1]!;
      let v = kv[2]!;
      if (res[k] !== undefined) throw new FormatError(`duplicate key in comma-separated list property: ${k}`);
      let s = keys[k];
      if (s?.alias) {
        if (s.keyAlias) {
          if (res[s.keyAlias] !== undefined) throw new FormatError(`key alias '${s.keyAlias}' is already defined`);
          res[s.keyAlias] = k;
        }
        k = s.alias;
        s = keys[k];
        if (res[k] !== undefined) throw new FormatError(`key '${k}' is already defined (via alias)`);
      }
      if (!s) throw new FormatError(`invalid key in comma-separated list property: ${k}`);
      if (s.type === "boolean") v = parseBoolean(v) ?? v;
      res[k] = v;
    } else if (!part.includes("=")) {
      if (defaultKey) throw new FormatError(`duplicate key in comma-separated list property: ${defaultKey}`);
      const dk = Object.keys(keys).find((k) => keys[k]!.default_key);
      if (!dk) throw new FormatError("value without key, but schema does not define a default key");
      defaultKey = dk;
      if (res[dk] !== undefined) throw new FormatError(`duplicate key in comma-separated list property: ${dk}`);
      res[dk] = keys[dk]!.type === "boolean" ? parseBoolean(part) ?? part : part;
    } else {
      throw new FormatError("missing key in comma-separated list property");
    }
  }
  const errors: Record<string, string> = {};
  const sub = (k: string) => (path ? `${path}.${k}` : k);
  for (const [k, s] of Object.entries(keys)) checkProp(res[k], s, sub(k), errors);
  for (const k of Object.keys(res)) {
    const req = keys[k]?.requires;
    if (req && res[req] === undefined) addError(errors, sub(req), `missing property required by '${sub(k)}'`);
  }
  if (Object.keys(errors).length) throw new FormatError("format error", errors);
  return res;
}

function parseBoolean(v: string): string | undefined {
  if (/^(1|on|yes|true)$/i.test(v)) return "1";
  if (/^(0|off|no|false)$/i.test(v)) return "0";
  return undefined;
}

interface ReturnSpec extends KeySpec {
  readonly items?: ReturnSpec;
  readonly properties?: Readonly<Record<string, ReturnSpec>>;
}

/**
 * Where an answer departs from the schema's `returns`: missing required fields,
 * wrong types, values outside an enum. Integers may come as digit strings
 * (PVE's JSON encoder writes Perl strings, as GET /cluster/nextid does).
 */
export function returnsViolations(key: string, value: unknown): string[] {
  const spec = (PVE_SCHEMA as unknown as Record<string, { returns: ReturnSpec }>)[key]?.returns;
  if (!spec) throw new Error(`${key} is not in PVE's schema table`);
  const out: string[] = [];
  const walk = (s: ReturnSpec, v: unknown, at: string) => {
    if (v === undefined || v === null) { if (!s.optional && s.type !== "null") out.push(`${at || "data"}: missing`); return; }
    const t = s.type;
    const bad = () => out.push(`${at || "data"}: not ${t}: ${JSON.stringify(v)}`);
    if (t === "array") { if (!Array.isArray(v)) { bad(); return; } if (s.items) v.forEach((x, i) => walk(s.items!, x, `${at}[${i}]`)); return; }
    if (t === "object") {
      if (typeof v !== "object" || Array.isArray(v)) { bad(); return; }
      for (const [k, ps] of Object.entries(s.properties ?? {})) walk(ps, (v as Record<string, unknown>)[k], at ? `${at}.${k}` : k);
      return;
    }
    if (t === "integer" && !(Number.isInteger(v) || (typeof v === "string" && /^[+-]?\d+$/.test(v)))) { bad(); return; }
    if (t === "number" && typeof v !== "number") { bad(); return; }
    if (t === "boolean" && !(v === 0 || v === 1 || v === true || v === false || v === "0" || v === "1")) { bad(); return; }
    if (t === "string" && typeof v !== "string") { bad(); return; }
    if (s.enum && !s.enum.includes(String(v))) out.push(`${at || "data"}: '${String(v)}' not in ${s.enum.join("|")}`);
  };
  walk(spec, value, "");
  return out;
}
