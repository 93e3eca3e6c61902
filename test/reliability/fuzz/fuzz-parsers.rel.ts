// R4, in-process part: seeded fuzzing of every parser that reads hostile
// input (pkt-line, ref advertisement, exec string, transport responses,
// hsd.yaml). Expected: only the typed error of each parser, never another
// throw, never a hang. HSD_RELIABILITY_CASES sets the case count per target.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng, caseCount, seed } from "../lib/prng.js";
import { figure } from "../lib/figures.js";
import { fuzzConfig, fuzzExecCommand, fuzzPktLine, fuzzTransport, type FuzzResult } from "./targets.js";

const N = caseCount(5000);

function check(name: string, r: FuzzResult): void {
  figure(`fuzz.${name}.cases`, r.cases, `${r.accepted} accepted, seed ${seed()}`);
  assert.equal(r.failures.length, 0, `${name}: ${r.failures.length} untyped/unsafe outcomes, first ones:\n${JSON.stringify(r.failures.slice(0, 5), null, 2)}`);
}

test("pkt-line and ref advertisement: only GitProtocol errors", () => check("pkt-line", fuzzPktLine(new Rng(seed()), N)));
test("exec command: only AccessDenied/RepoNotFound, accepted names are plain", () => check("exec-command", fuzzExecCommand(new Rng(seed() + 1), N)));
test("transport plugin responses: typed errors, no hang", async () => check("transport", await fuzzTransport(new Rng(seed() + 2), Math.ceil(N / 5))));
test("hsd.yaml: only ConfigInvalid, accepted configs keep their invariants", () => check("config", fuzzConfig(new Rng(seed() + 3), N)));
