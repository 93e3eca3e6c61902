// ChildTree.walk's order options: a manifest's on_error stop starts no child
// after a failure, while the default keeps siblings going.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ChildTree, ONE_AT_A_TIME, valuesOrFirstFailure } from "../../src/nest/child-tree.js";
import type { Journal } from "../../src/nest/journal.js";
import { InvalidArgumentError } from "../../src/domain/errors.js";

function tree(): ChildTree {
  // walk only takes the children it is given: the journal is never read here.
  return new ChildTree({ self: () => ({ name: "l1" }), journal: {} as Journal, clock: { now: () => 0 } });
}

const kids = ["a", "b", "c"].map((name) => ({ name }));

async function walkWith(stop: boolean) {
  const visited: string[] = [];
  const walked = await tree().walk(kids, () => {}, { ...ONE_AT_A_TIME, stopAfterFailure: stop }, async (c, at) => {
    visited.push(at.path.join("/"));
    if (c.name === "a") throw new InvalidArgumentError("a fails");
    return c.name;
  });
  return { visited, walked };
}

test("by default a failed child does not stop its siblings", async () => {
  const { visited, walked } = await walkWith(false);
  assert.deepEqual(visited, ["l1/a", "l1/b", "l1/c"]);
  assert.equal(walked.failures.length, 1);
  assert.throws(() => valuesOrFirstFailure(walked), (e: any) => e.code === "InvalidArgument");
});

test("stopAfterFailure starts no child after a failure; unstarted children have no outcome", async () => {
  const { visited, walked } = await walkWith(true);
  assert.deepEqual(visited, ["l1/a"]);
  assert.equal(walked.outcomes[0]?.status, "rejected");
  assert.equal(walked.outcomes[1], undefined);
  assert.equal(walked.outcomes[2], undefined);
});
