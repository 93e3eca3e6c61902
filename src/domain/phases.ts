// The build phases of one level, in order. Their names are API: they appear in
// events, logs, the journal and the closing report.
// Imported by: anyone.

export type PhaseName =
  | "preflight" | "provision" | "boot" | "install" | "handshake"
  | "sync" | "secrets" | "configure" | "nest";

/** The build phases of one level, in order. Names are API. */
export const PHASES: readonly PhaseName[] = Object.freeze([
  "preflight", "provision", "boot", "install", "handshake", "sync", "secrets", "configure", "nest",
]);
