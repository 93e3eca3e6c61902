// Reading state files that may not exist yet: ENOENT is "absent", anything else
// is a real error.
// Imported by: anyone.

import { readFile } from "node:fs/promises";

export async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
