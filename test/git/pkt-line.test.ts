// pkt-line framing: round trips, and malformed input fails typed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { encodePktLine, parsePktLines, readPkt, parseAdvertisement, FLUSH_PKT } from "../../src/git/pkt-line.js";
import { HsError } from "../../src/domain/errors.js";

const codeOf = (fn: () => unknown) => { try { fn(); } catch (e) { assert.ok(e instanceof HsError); return e.code; } return "none"; };
const OID = "a".repeat(40);

test("encode/parse round trip with flush, delim and response-end", () => {
  const buf = Buffer.concat([encodePktLine("hello\n"), FLUSH_PKT, Buffer.from("0001"), Buffer.from("0002"), encodePktLine(Buffer.alloc(0))]);
  const pkts = parsePktLines(buf);
  assert.deepEqual(pkts.map((p) => p.type), ["data", "flush", "delim", "response-end", "data"]);
  assert.equal((pkts[0] as { payload: Buffer }).payload.toString(), "hello\n");
});

test("readPkt waits for more bytes instead of failing on a partial packet", () => {
  assert.equal(readPkt(Buffer.from("00")), undefined);
  assert.equal(readPkt(Buffer.from("000ahel")), undefined);
});

for (const [what, raw] of Object.entries({
  "non-hex length": "zzzzdata",
  "length 3 (reserved)": "0003",
  "length beyond maximum": "fff5xxxx",
  "truncated payload at end": "0010abc",
  "negative-looking length": "-001abc",
})) {
  test(`malformed: ${what} is GitProtocol`, () => assert.equal(codeOf(() => parsePktLines(Buffer.from(raw))), "GitProtocol"));
}

test("encode refuses an oversized payload", () => assert.equal(codeOf(() => encodePktLine(Buffer.alloc(65517))), "GitProtocol"));

test("advertisement: refs, capabilities, ERR", () => {
  const ad = parseAdvertisement(parsePktLines(Buffer.concat([
    encodePktLine(`${OID} HEAD\0multi_ack symref=HEAD:refs/heads/_working\n`), encodePktLine(`${OID} refs/heads/_working\n`), FLUSH_PKT,
  ])));
  assert.deepEqual(ad.refs, [{ oid: OID, name: "HEAD" }, { oid: OID, name: "refs/heads/_working" }]);
  assert.deepEqual(ad.capabilities, ["multi_ack", "symref=HEAD:refs/heads/_working"]);
  assert.equal(parseAdvertisement(parsePktLines(encodePktLine("ERR no such repo\n"))).error, "no such repo");
});

for (const [what, line] of Object.entries({
  "short oid": `${"a".repeat(39)} HEAD\n`,
  "uppercase oid": `${"A".repeat(40)} HEAD\n`,
  "missing name": `${OID}\n`,
  "control char in name": `${OID} refs/heads/x\x01\n`,
  "protocol v2 reply": "version 2\n",
})) {
  test(`advertisement: ${what} is GitProtocol`, () => {
    assert.equal(codeOf(() => parseAdvertisement(parsePktLines(Buffer.concat([encodePktLine(line), FLUSH_PKT])))), "GitProtocol");
  });
}

test("fuzz: random bytes never throw anything but GitProtocol", () => {
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
  for (let i = 0; i < 3000; i++) {
    const len = Math.floor(rnd() * 64);
    const b = Buffer.alloc(len);
    for (let j = 0; j < len; j++) b[j] = rnd() < 0.5 ? "0123456789abcdef".charCodeAt(Math.floor(rnd() * 16)) : Math.floor(rnd() * 256);
    try { parseAdvertisement(parsePktLines(b)); } catch (e) { assert.ok(e instanceof HsError && e.code === "GitProtocol", String(e)); }
  }
});
