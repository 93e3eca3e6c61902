// One preflight check's outcome: what a provider's preflight returns and what
// `hsctl doctor` prints.
// Imported by: anyone.

export interface CheckResult {
  readonly name: string;
  readonly result: "ok" | "repaired" | "failed";
  readonly detail: string;
  readonly hint?: string;
}
