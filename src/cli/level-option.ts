// --level PATH, shared by status, sync, destroy, doctor and logs: "l0/l1/l2"
// into the level path a request carries, checked before anything is sent.
// Imported by: src/cli/commands.

import { InvalidArgumentError } from "../domain/errors.js";
import type { LevelPath } from "../domain/level-api.js";

export const LEVEL_OPTION = { level: { type: "string" } } as const;

export const LEVEL_HELP = `  --level PATH   a level below, by its path from the level hsctl talks to,
                 e.g. l0/l1/l2 (see \`hsctl status\`); relayed through each parent`;

/** The --level value as a path, or undefined when absent. */
export function levelOption(values: Record<string, unknown>): LevelPath | undefined {
  const v = values.level;
  if (v === undefined) return undefined;
  const parts = String(v).split("/");
  if (parts.some((p) => !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(p))) {
    throw new InvalidArgumentError(`--level must be level names joined by /, e.g. l0/l1/l2; got ${JSON.stringify(String(v).slice(0, 80))}`, { details: { field: "level" } });
  }
  return parts;
}
