// Masks secret values in text that is about to leave a level (log lines for
// `hsctl logs`). The logger redacts by field name; this catches a value that
// reached a line under any other name.
// Imported by: src/level.

import type { SecretTree } from "../secrets/secrets-store.js";

/** Shorter values (ports, "yes") would mask ordinary words. */
const MIN_SECRET_LENGTH = 6;

/** Every string leaf of the secrets tree long enough to be worth masking, longest first. */
export function secretValues(tree: SecretTree | unknown): string[] {
  const out = new Set<string>();
  const walk = (v: unknown) => {
    if (typeof v === "string") { if (v.length >= MIN_SECRET_LENGTH) out.add(v); }
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") Object.values(v).forEach(walk);
  };
  walk(tree);
  return [...out].sort((a, b) => b.length - a.length);
}

/** `text` with every occurrence of each value (and its JSON-escaped form) replaced by [redacted]. */
export function redactValues(text: string, values: readonly string[]): string {
  let out = text;
  for (const v of values) {
    for (const form of new Set([v, JSON.stringify(v).slice(1, -1)])) {
      if (out.includes(form)) out = out.split(form).join("[redacted]");
    }
  }
  return out;
}
