// The PVE releases hsd's pve provider works with, and the check of a node's
// GET /version answer against them (preflight's api check). The range follows
// what the provider sends: `ciupgrade` exists from PVE 8.0 on (qemu-server 8.0,
// June 2023); 7.x refuses it as an unknown property.
// Imported by: src/providers/pve.

export const PVE_MIN_MAJOR = 8;
/** The newest major release hsd was checked against (pve-schema.ts's source). */
export const PVE_MAX_TESTED_MAJOR = 9;

export interface PveVersion { readonly major: number; readonly minor: number; readonly raw: string }

/** "8.3.2", "9.1.3", "7.4-3" (7.x style); undefined when unreadable. */
export function parsePveVersion(raw: string): PveVersion | undefined {
  const m = /^(\d+)\.(\d+)/.exec(raw);
  return m ? { major: Number(m[1]), minor: Number(m[2]), raw } : undefined;
}

/** Whether hsd supports that release; `note` says why not, or that it is newer than tested. */
export function pveVersionSupport(raw: string): { supported: boolean; note?: string } {
  const v = parsePveVersion(raw);
  if (!v) return { supported: false, note: `unreadable PVE version '${raw}'` };
  if (v.major < PVE_MIN_MAJOR) return { supported: false, note: `PVE ${raw} is older than ${PVE_MIN_MAJOR}.0 (no ciupgrade option)` };
  if (v.major > PVE_MAX_TESTED_MAJOR) return { supported: true, note: `PVE ${raw} is newer than the ${PVE_MAX_TESTED_MAJOR}.x hsd was checked against` };
  return { supported: true };
}

/** The first release whose directory storages hold `import` content, which a token's import-from needs (pve-storage 8.2). */
export const PVE_IMPORT_CONTENT = { major: 8, minor: 2 } as const;

/** Whether hsd can make a template from an image on that release (an unreadable version counts as no). */
export function canImportImages(raw: string): boolean {
  const v = parsePveVersion(raw);
  return !!v && (v.major > PVE_IMPORT_CONTENT.major || (v.major === PVE_IMPORT_CONTENT.major && v.minor >= PVE_IMPORT_CONTENT.minor));
}
