// Where a request with a level path goes: this level, or the named child with
// the rest of the path. The one place a path is checked on its way down.
// Imported by: src/level.

import { LevelNotFoundError } from "../domain/errors.js";
import type { LevelPath } from "../domain/level-api.js";

/**
 * undefined when `levelPath` is this level (empty, or just its name); else the
 * child to relay through and the path from that child down. A path must start
 * with this level's name and name a live child next.
 */
export function routeLevel(self: string, levelPath: LevelPath | undefined, children: readonly string[]): { child: string; rest: LevelPath } | undefined {
  if (!levelPath || levelPath.length === 0) return undefined;
  if (levelPath[0] !== self) {
    throw new LevelNotFoundError(`no level ${levelPath.join("/")}: this level is ${self}`, { details: { levelPath: levelPath.join("/"), at: self } });
  }
  if (levelPath.length === 1) return undefined;
  const child = levelPath[1]!;
  if (!children.includes(child)) {
    throw new LevelNotFoundError(`no level ${levelPath.join("/")}: ${self} has ${children.length > 0 ? `children ${children.join(", ")}` : "no children"}`, {
      details: { levelPath: levelPath.join("/"), at: self, known: [...children] },
    });
  }
  return { child, rest: levelPath.slice(1) };
}
