// Unit tests of src/util/settle-all.ts: the values in order when all succeed;
// on failure, nothing is thrown before every promise has settled, and the
// first rejection in the given order is the one thrown.
import { test } from "node:test";
import assert from "node:assert/strict";
import { settleAll } from "../../src/util/settle-all.js";

test("settleAll: the values in the given order", async () => {
  const slow = new Promise<string>((r) => setImmediate(() => r("b")));
  assert.deepEqual(await settleAll([Promise.resolve(1), slow, 3]), [1, "b", 3]);
  assert.deepEqual(await settleAll([]), []);
});

test("settleAll: a failure is thrown only once every promise has settled", async () => {
  let finished = false;
  const late = new Promise<void>((r) => setTimeout(() => { finished = true; r(); }, 20));
  await assert.rejects(settleAll([Promise.reject(Object.assign(new Error("x"), { code: "First" })), late]), (err: Error & { code?: string }) => {
    assert.equal(err.code, "First");
    assert.equal(finished, true, "thrown before the other promise settled");
    return true;
  });
});

test("settleAll: the first rejection in the given order, not in time", async () => {
  const laterButFirst = new Promise<never>((_r, j) => setTimeout(() => j(Object.assign(new Error("a"), { code: "A" })), 15));
  const soonerButSecond = Promise.reject(Object.assign(new Error("b"), { code: "B" }));
  await assert.rejects(settleAll([laterButFirst, soonerButSecond]), (err: Error & { code?: string }) => err.code === "A");
});
