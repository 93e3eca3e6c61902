// PVE task identifiers (UPIDs): parse and format. A UPID names the node that
// runs the task, which is the node its status must be asked of, whatever node
// the request went to.
// Imported by: src/providers/pve.

import { PveApiError } from "../../domain/errors.js";

export interface Upid {
  readonly node: string;
  readonly pid: number;
  readonly pstart: number;
  /** Epoch seconds. */
  readonly starttime: number;
  readonly type: string;
  /** For qmclone this is the SOURCE vmid. */
  readonly id: string;
  /** USER@REALM or USER@REALM!TOKENID. */
  readonly user: string;
  readonly raw: string;
}

const UPID_RE = /^UPID:([A-Za-z0-9.-]+):([0-9A-F]{8}):([0-9A-F]{8,9}):([0-9A-F]{8}):([^:]+):([^:]*):([^:]+):$/;

export function parseUpid(raw: string): Upid {
  const m = UPID_RE.exec(raw);
  if (!m) throw new PveApiError("not a PVE task id (UPID)", { details: { upid: raw } });
  return {
    node: m[1]!, pid: parseInt(m[2]!, 16), pstart: parseInt(m[3]!, 16), starttime: parseInt(m[4]!, 16),
    type: m[5]!, id: m[6]!, user: m[7]!, raw,
  };
}

export function formatUpid(u: Omit<Upid, "raw">): string {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(8, "0");
  return `UPID:${u.node}:${hex(u.pid)}:${hex(u.pstart)}:${hex(u.starttime)}:${u.type}:${u.id}:${u.user}:`;
}
