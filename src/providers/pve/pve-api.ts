// Request and answer types of the PVE API, derived from Proxmox's own schema
// (pve-schema.ts, type-only import: the table never enters the bundle), and the
// one runtime helper that turns an endpoint plus its parameters into a path.
// A misspelled parameter or a wrong type is a tsc error at the call site.
// Imported by: src/providers/pve.

import type { PVE_SCHEMA } from "./pve-schema.js";

type Schema = typeof PVE_SCHEMA;
/** "METHOD /path/{param}" as in the API viewer. */
export type PveEndpoint = keyof Schema;
type Spec = { readonly type?: string; readonly optional?: boolean; readonly enum?: readonly string[] };

/** The wire value for one schema type: PVE takes booleans as 1/0 and integers as digits. */
type ValueOf<S> =
  S extends { readonly enum: readonly (infer E extends string)[] } ? (S extends { readonly type: "integer" } ? E | number : E)
    : S extends { readonly type: "integer" | "number" } ? number
    : S extends { readonly type: "boolean" } ? boolean | 0 | 1
    : string;

/** "net[n]" stands for net0, net1, ... (the API viewer's notation). */
type WireName<K> = K extends `${infer B}[n]` ? `${B}${number}` : K;
type Params<P> = {
  -readonly [K in keyof P as P[K] extends { readonly optional: true } ? never : WireName<K>]: ValueOf<P[K]>
} & {
  -readonly [K in keyof P as P[K] extends { readonly optional: true } ? WireName<K> : never]?: ValueOf<P[K]>
};
/** Every parameter of the endpoint, path parameters included (PVE's schema lists them alongside). */
export type PveParams<E extends PveEndpoint> = Params<Schema[E]["params"]>;

/** What the schema's `returns` promises; objects without listed properties stay open. */
export type PveReturn<R> =
  R extends { readonly type: "null" } ? null
    : R extends { readonly type: "array"; readonly items: infer I } ? PveReturn<I>[]
    : R extends { readonly type: "array" } ? unknown[]
    : R extends { readonly type: "object"; readonly properties: infer P } ? ReturnObject<P>
    : R extends { readonly type: "object" } ? Readonly<Record<string, unknown>>
    : R extends Spec ? ValueOf<R>
    : unknown;
type ReturnObject<P> = {
  readonly [K in keyof P as P[K] extends { readonly optional: true } ? never : K]: PveReturn<P[K]>
} & {
  readonly [K in keyof P as P[K] extends { readonly optional: true } ? K : never]?: PveReturn<P[K]>
};
export type PveReturns<E extends PveEndpoint> = PveReturn<Schema[E]["returns"]>;

export type PveMethod = "GET" | "POST" | "PUT" | "DELETE";

/** Splits an endpoint into method and concrete path; path parameters leave `rest`, URL-encoded into the path. */
export function expandEndpoint(endpoint: string, params: Readonly<Record<string, unknown>>): {
  method: PveMethod; path: string; rest: Record<string, string | number | boolean | undefined>;
} {
  const sp = endpoint.indexOf(" ");
  const method = endpoint.slice(0, sp) as PveMethod;
  const rest: Record<string, string | number | boolean | undefined> = { ...(params as Record<string, string | number | boolean | undefined>) };
  const path = endpoint.slice(sp + 1).replace(/\{([^}]+)\}/g, (_m, name: string) => {
    const v = rest[name];
    delete rest[name];
    return encodeURIComponent(String(v));
  });
  return { method, path, rest };
}
