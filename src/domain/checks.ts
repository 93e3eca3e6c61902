// One preflight check's outcome: what a provider's preflight returns and what
// `hsctl doctor` prints.
// Imported by: anyone.

import { PreflightError } from "./errors.js";

export interface CheckResult {
  readonly name: string;
  readonly result: "ok" | "repaired" | "failed";
  readonly detail: string;
  readonly hint?: string;
}

/**
 * The PreflightError for the failed checks among these, or undefined when
 * none failed: each named with its detail, the first one's hint to act on.
 */
export function failedChecksError(checks: readonly CheckResult[], what: string, details: Record<string, unknown> = {}): PreflightError | undefined {
  const failed = checks.filter((c) => c.result === "failed");
  if (failed.length === 0) return undefined;
  return new PreflightError(`${what}: ${failed.map((c) => `${c.name} (${c.detail})`).join("; ")}`, {
    details: { ...details, failed: failed.map((c) => c.name), hint: failed[0]!.hint },
  });
}
