// Local user lookup from /etc/passwd (a level's service users, such as
// homestak, are local accounts).
// Imported by: anyone.

import { readFileSync } from "node:fs";

export interface PasswdEntry { name: string; uid: number; gid: number; home: string }

/** The user's passwd entry (local files only: a level's service users are local). */
export function lookupUser(name: string, passwd = "/etc/passwd"): PasswdEntry | undefined {
  let text: string;
  try { text = readFileSync(passwd, "utf8"); } catch { return undefined; }
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f[0] === name && f.length >= 7) return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! };
  }
  return undefined;
}
