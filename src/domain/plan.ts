// A build plan from a manifest: the nodes a level builds (its children, by
// manifest name) and everything below them, sizes already resolved from
// site-config presets. Level 0 makes it from a validated manifest; each level
// passes its children's subtrees down in their Nest requests.
// Imported by: anyone.

export type OnError = "stop" | "continue" | "rollback";
export const ON_ERROR: readonly OnError[] = ["stop", "continue", "rollback"];

/** A node name is a DNS label: it becomes the hostname, nodes/<name>.yaml and the api_tokens key. */
export function isNodeName(s: string): boolean {
  return /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(s);
}

/** One manifest node as hsd builds it. */
export interface PlannedNode {
  readonly name: string;
  readonly type: "pve" | "vm";
  /** Absent: a root, built by the level the manifest runs on. */
  readonly parent?: string;
  readonly spec: string;
  readonly preset: string;
  readonly image: string;
  /** 0: the provider picks. */
  readonly vmid: number;
  readonly cores: number;
  readonly memoryMb: number;
  readonly diskGb: number;
}

export interface BuildPlan {
  /** The manifest's name (destroy -M and status name it). */
  readonly manifest: string;
  readonly onError: OnError;
  /** Destroy the children this manifest built that it no longer names. */
  readonly prune?: boolean;
  /** The nodes this level builds (roots) and their subtrees. */
  readonly nodes: readonly PlannedNode[];
}

/** The nodes below `root` (its whole subtree, root excluded), in manifest order. */
export function subtreeOf(nodes: readonly PlannedNode[], root: string): PlannedNode[] {
  const inside = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const n of nodes) if (n.parent && inside.has(n.parent) && !inside.has(n.name)) { inside.add(n.name); grew = true; }
  }
  return nodes.filter((n) => n.name !== root && inside.has(n.name));
}

/** The nodes a level builds itself: those whose parent is not in the list. */
export function rootsOf(nodes: readonly PlannedNode[]): PlannedNode[] {
  const names = new Set(nodes.map((n) => n.name));
  return nodes.filter((n) => !n.parent || !names.has(n.parent));
}

/** Levels from the roots of `nodes` down to its deepest node (0 for none). */
export function heightOf(nodes: readonly PlannedNode[]): number {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  let max = 0;
  for (const n of nodes) {
    let d = 1;
    for (let p = n.parent; p && byName.has(p) && d <= nodes.length; p = byName.get(p)!.parent) d++;
    max = Math.max(max, d);
  }
  return max;
}

/** The image names `nodes` are made from. */
export function imagesOf(nodes: readonly PlannedNode[]): Set<string> {
  return new Set(nodes.map((n) => n.image));
}

/**
 * The nodes a level builds itself must be made from images it holds
 * (`held`: its images: names). A level holding none makes every child from its
 * provider's default (pve: the operator's pve.template), so nothing is checked.
 */
export function unheldImages(plan: BuildPlan, held: readonly string[]): { node: string; field: "image"; message: string }[] {
  if (held.length === 0) return [];
  return rootsOf(plan.nodes).filter((n) => !held.includes(n.image)).map((n) => ({
    node: n.name, field: "image" as const,
    message: `image ${JSON.stringify(n.image)} is not one this level holds (images: ${[...held].sort().join(", ")})`,
  }));
}
