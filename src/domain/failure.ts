// A failure as it travels in events and status: code, secret-free message,
// hint. toFailure turns any thrown value into one.
// Imported by: anyone.

import { HsError } from "./errors.js";

export interface Failure {
  /** Stable code (HsError.code). */
  readonly code: string;
  /** Secret-free message. */
  readonly message: string;
  readonly hint?: string;
}

export function toFailure(err: unknown): Failure {
  if (err instanceof HsError) return { code: err.code, message: err.message, hint: typeof err.details.hint === "string" ? err.details.hint : undefined };
  return { code: "Internal", message: err instanceof Error ? err.message : String(err) };
}
