// Announces readiness three ways, all from one ReadyInfo: run/ready.json
// (atomic, 0600), the inherited HSD_READY_FD pipe (one JSON line, then closed),
// and systemd (READY=1 through the notifier, when hsd runs as a service). A
// daemon that cannot start writes a failure line to the same pipe instead, so
// whoever started it reports the daemon's own error.
// Imported by: src/daemon.

import { createWriteStream, writeSync } from "node:fs";
import { unlink } from "node:fs/promises";
import type { Logger } from "../log/logger.js";
import { writeFileAtomic } from "../util/atomic-write.js";
import type { ReadyInfo, StartFailure } from "../util/ready-pipe.js";
import type { SdNotifier } from "./sd-notify.js";

export type { ReadyInfo, StartFailure };

/** Set once the ready line went out: after that the fd number may belong to another file. */
let readyFdUsed = false;

export interface AnnounceOptions {
  readyFile: string;
  info: ReadyInfo;
  env: NodeJS.ProcessEnv;
  log: Logger;
  notifier: SdNotifier;
}

export async function announceReady(o: AnnounceOptions): Promise<void> {
  const json = JSON.stringify(o.info);
  await writeFileAtomic(o.readyFile, `${json}\n`, { mode: 0o600 });
  const fdText = o.env.HSD_READY_FD;
  if (fdText !== undefined && fdText !== "") {
    const fd = Number(fdText);
    if (Number.isInteger(fd) && fd > 2) {
      readyFdUsed = true;
      await writeFd(fd, `${json}\n`, o.log);
    }
    else o.log.warn({ HSD_READY_FD: fdText }, "ignoring HSD_READY_FD: not a file descriptor number above 2");
  }
  await o.notifier.ready();
}

/**
 * Writes `{"error": failure}` to HSD_READY_FD, synchronously: the daemon exits
 * right after. A no-op once the ready line went out or without the variable.
 */
export function announceFailure(env: NodeJS.ProcessEnv, failure: StartFailure): void {
  const fd = Number(env.HSD_READY_FD || NaN);
  if (readyFdUsed || !Number.isInteger(fd) || fd <= 2) return;
  readyFdUsed = true;
  try {
    writeSync(fd, `${JSON.stringify({ error: failure })}\n`);
  } catch {
    // Whoever started us stopped listening; stderr and the log still carry the error.
  }
}

function writeFd(fd: number, text: string, log: Logger): Promise<void> {
  return new Promise((resolve) => {
    const s = createWriteStream("", { fd, autoClose: true });
    // A parent that stopped listening must not stop this daemon from serving.
    s.on("error", (err) => { log.warn({ err, fd }, "could not write the ready line"); resolve(); });
    s.end(text, () => resolve());
  });
}

export async function removeReadyFile(readyFile: string): Promise<void> {
  await unlink(readyFile).catch(() => {});
}
