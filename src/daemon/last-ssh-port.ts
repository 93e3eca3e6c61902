// The SSH port a level bound last, kept in state/ssh-port when hsd.yaml leaves
// ssh.port unset on a user root: a restarted level 0 listens there again, so
// the live children pinned to it still sync.
// Imported by: src/daemon/level-wiring.ts.

import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { writeFileAtomic } from "../util/atomic-write.js";
import { readTextIfExists } from "../util/read-if-exists.js";

/** The remembered port, or undefined when there is none (or the file is not a port). */
export async function readLastSshPort(file: string): Promise<number | undefined> {
  const text = await readTextIfExists(file).catch(() => undefined);
  const port = Number(text?.trim());
  return Number.isInteger(port) && port > 0 && port <= 65535 ? port : undefined;
}

export async function rememberSshPort(file: string, port: number): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomic(file, `${port}\n`, { mode: 0o600 });
}
