// Announces readiness three ways, all from one ReadyInfo: run/ready.json
// (atomic, 0600), the inherited HSD_READY_FD pipe (one JSON line, then closed),
// and systemd (READY=1 through the notifier, when hsd runs as a service).
// Imported by: src/daemon.

import { createWriteStream } from "node:fs";
import { unlink } from "node:fs/promises";
import type { Logger } from "../log/logger.js";
import { writeFileAtomic } from "../util/atomic-write.js";
import type { ReadyInfo } from "../util/ready-pipe.js";
import type { SdNotifier } from "./sd-notify.js";

export type { ReadyInfo };

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
    if (Number.isInteger(fd) && fd > 2) await writeFd(fd, `${json}\n`, o.log);
    else o.log.warn({ HSD_READY_FD: fdText }, "ignoring HSD_READY_FD: not a file descriptor number above 2");
  }
  await o.notifier.ready();
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
