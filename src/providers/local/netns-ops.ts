// What the local provider needs from network namespaces, as an interface so the
// provider does not depend on iproute2 details (netns.ts implements it).
// Imported by: src/providers/local.

export interface NetnsInfo {
  readonly nsName: string;
  readonly parentAddr: string;
  readonly childAddr: string;
}

export interface NetnsOps {
  available(): Promise<{ ok: boolean; reason?: string }>;
  /** Creates (or reuses) the child's namespace joined to the current one by a veth /30. */
  create(levelPath: readonly string[], signal: AbortSignal): Promise<NetnsInfo>;
  execPrefix(nsName: string): string[];
  /** Idempotent. */
  destroy(nsName: string): Promise<void>;
}
