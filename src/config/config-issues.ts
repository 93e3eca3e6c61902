// Collects every problem found in one hsd.yaml so a run reports them all at
// once (file:line[:column] and key each, in file order), then throws one
// ConfigError carrying the list.
// Imported by: src/config.

import { ConfigError } from "../domain/errors.js";

/** One problem in a config file. `key` is the dotted path ("" for syntax or file-level problems). */
export interface ConfigIssue {
  readonly file: string;
  readonly line?: number;
  readonly column?: number;
  readonly key: string;
  readonly message: string;
}

/** "file:line[:col]: key: message", the form every issue is printed in. */
export function formatIssue(i: ConfigIssue): string {
  const where = `${i.file}${i.line ? `:${i.line}${i.column ? `:${i.column}` : ""}` : ""}`;
  return `${where}: ${i.key ? `${i.key}: ` : ""}${i.message}`;
}

export class ConfigIssues {
  private readonly list: ConfigIssue[] = [];

  add(issue: ConfigIssue): void {
    this.list.push(issue);
  }

  get size(): number {
    return this.list.length;
  }

  /**
   * Throws one ConfigError listing every issue in file order (issues without a
   * line first); its details keep the first issue's file/line/key and the list.
   */
  throwIfAny(): void {
    if (this.list.length === 0) return;
    const issues = this.list
      .map((i, n) => ({ i, n }))
      .sort((a, b) => (a.i.line ?? 0) - (b.i.line ?? 0) || (a.i.column ?? 0) - (b.i.column ?? 0) || a.n - b.n)
      .map(({ i }) => i);
    const first = issues[0]!;
    const message = issues.length === 1
      ? formatIssue(first)
      : `${first.file}: ${issues.length} errors\n${issues.map((i) => `  ${formatIssue(i)}`).join("\n")}`;
    throw new ConfigError(message, {
      details: { file: first.file, line: first.line, key: first.key, issues: issues.map((i) => ({ ...i })) },
    });
  }
}

/** The issues a ConfigError carries (a single-issue list for one thrown without a list). */
export function configIssuesOf(err: ConfigError): ConfigIssue[] {
  const list = err.details.issues;
  if (Array.isArray(list)) return list as ConfigIssue[];
  const d = err.details as { file?: string; line?: number; key?: string };
  return [{ file: d.file ?? "", ...(d.line ? { line: d.line } : {}), key: d.key ?? "", message: err.message }];
}
