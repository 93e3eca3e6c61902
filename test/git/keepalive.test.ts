// Unit test of the keepalive derivation in src/ssh/parent-connection.ts: a
// dead peer is declared gone after about the connect timeout (count+1 silent
// intervals), never on a 15 s interval that ignores the configured timeout.
import { test } from "node:test";
import assert from "node:assert/strict";
import { KEEPALIVE_COUNT_MAX, keepaliveIntervalMs } from "../../src/ssh/parent-connection.js";

test("keepalive interval follows the connect timeout, with a 1 s floor", () => {
  assert.equal(KEEPALIVE_COUNT_MAX, 3);
  assert.equal(keepaliveIntervalMs(3_000), 1_000);
  assert.equal(keepaliveIntervalMs(10_000), 3_333);
  assert.equal(keepaliveIntervalMs(30_000), 10_000);
  assert.equal(keepaliveIntervalMs(500), 1_000);
});
