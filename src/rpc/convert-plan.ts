// A manifest build plan between domain and proto: PlannedNode lists in a
// NestRequest. Checks the shape a parent sent (names, types, parents inside
// or above the list) at the gRPC boundary; sizes and names in site-config
// were checked at level 0.
// Imported by: src/rpc, src/api.

import { InvalidArgumentError } from "../domain/errors.js";
import { isNodeName, ON_ERROR, type BuildPlan, type OnError, type PlannedNode } from "../domain/plan.js";
import type { PlannedNode as ProtoNode } from "../gen/homestak/nest/v1/nest_pb.js";

const MAX_NODES = 256;

export function toProtoPlan(p: BuildPlan): { nodes: ProtoNode[]; manifest: string; onError: string; prune: boolean } {
  return {
    manifest: p.manifest, onError: p.onError, prune: p.prune ?? false,
    nodes: p.nodes.map((n) => ({
      $typeName: "homestak.nest.v1.PlannedNode", name: n.name, type: n.type, parent: n.parent ?? "", spec: n.spec, preset: n.preset,
      image: n.image, vmid: n.vmid, cores: n.cores, memoryMb: n.memoryMb, diskGb: n.diskGb,
    })),
  };
}

/** A parent's plan, checked; undefined when the request carries none. */
export function fromProtoPlan(req: { nodes: readonly ProtoNode[]; manifest: string; onError: string; prune: boolean }): BuildPlan | undefined {
  if (req.nodes.length === 0 && req.manifest === "") return undefined;
  const bad = (field: string, msg: string) => new InvalidArgumentError(`plan: ${msg}`, { details: { field } });
  if (req.nodes.length > MAX_NODES) throw bad("nodes", `more than ${MAX_NODES} nodes`);
  const onError = (req.onError || "stop") as OnError;
  if (!ON_ERROR.includes(onError)) throw bad("on_error", `on_error must be ${ON_ERROR.join(", ")}`);
  const names = new Set<string>();
  const nodes: PlannedNode[] = req.nodes.map((n, i) => {
    if (!isNodeName(n.name) || names.has(n.name)) throw bad(`nodes[${i}].name`, `node ${i}: name must be a unique DNS label`);
    names.add(n.name);
    if (n.type !== "pve" && n.type !== "vm") throw bad(`nodes[${i}].type`, `node ${n.name}: type must be pve or vm`);
    return {
      name: n.name, type: n.type, ...(n.parent ? { parent: n.parent } : {}), spec: n.spec, preset: n.preset, image: n.image,
      vmid: n.vmid, cores: n.cores, memoryMb: n.memoryMb, diskGb: n.diskGb,
    };
  });
  // Parents listed must come first, so a plan is a forest and never a cycle.
  const seen = new Set<string>();
  for (const n of nodes) {
    if (n.parent && names.has(n.parent) && !seen.has(n.parent)) throw bad("nodes", `node ${n.name} comes before its parent ${n.parent}`);
    if (n.parent && names.has(n.parent) && nodes.find((p) => p.name === n.parent)!.type !== "pve") throw bad("nodes", `node ${n.name}: only pve nodes have children`);
    seen.add(n.name);
  }
  return { manifest: req.manifest, onError, ...(req.prune ? { prune: true } : {}), nodes };
}
