// A plan crosses the wire intact, and a parent's malformed plan is refused at
// the child's gRPC boundary (bad names, types, on_error, order, vm parents).
import { test } from "node:test";
import assert from "node:assert/strict";
import { fromProtoPlan, toProtoPlan } from "../../src/rpc/convert-plan.js";
import type { BuildPlan } from "../../src/domain/plan.js";
import { HsError } from "../../src/domain/errors.js";
import { toWireStatus } from "../../src/rpc/error-status.js";
import { ManifestInvalidError } from "../../src/domain/errors.js";

const node = { spec: "pve", preset: "vm-large", image: "pve-9", vmid: 99011, cores: 4, memoryMb: 8192, diskGb: 64 };
const plan: BuildPlan = {
  manifest: "n3-deep", onError: "continue",
  nodes: [{ name: "leaf-pve", type: "pve", parent: "root-pve", ...node }, { name: "edge", type: "vm", parent: "leaf-pve", ...node, vmid: 0 }],
};

test("a plan round-trips through its proto form", () => {
  assert.deepEqual(fromProtoPlan(toProtoPlan(plan)), plan);
  assert.equal(fromProtoPlan({ nodes: [], manifest: "", onError: "", prune: false }), undefined);
});

test("a malformed plan is InvalidArgument", () => {
  const p = toProtoPlan(plan);
  const bad = [
    { ...p, onError: "retry" },
    { ...p, nodes: [{ ...p.nodes[0]!, name: "Leaf" }] },
    { ...p, nodes: [{ ...p.nodes[0]!, type: "ct" }] },
    { ...p, nodes: [p.nodes[0]!, p.nodes[0]!] },
    { ...p, nodes: [p.nodes[1]!, p.nodes[0]!] },
    { ...p, nodes: [{ ...p.nodes[0]!, type: "vm" }, p.nodes[1]!] },
  ];
  for (const b of bad) {
    const err = (() => { try { fromProtoPlan(b); } catch (e) { return e; } })();
    assert.ok(err instanceof HsError, JSON.stringify(b));
    assert.equal(err.code, "InvalidArgument");
  }
});

test("a manifest's problems travel in the hs-errors trailer", () => {
  const errors = [{ file: "m.yaml", node: "a", field: "parent", message: "no node is named b" }];
  const st = toWireStatus(new ManifestInvalidError("m.yaml: 1 problem", { details: { file: "m.yaml", errors } }));
  assert.deepEqual(JSON.parse(String(st.metadata.get("hs-errors")[0])), errors);
  assert.equal(st.metadata.get("hs-code")[0], "ManifestInvalid");
});
