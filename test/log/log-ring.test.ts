// The log ring `hsctl logs` reads: history bounded by bytes, followers bounded
// by lines (a slow one is told how many it lost), lines split across writes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LogRing } from "../../src/log/log-ring.js";
import { redactValues, secretValues } from "../../src/level/redact-values.js";
import { routeLevel } from "../../src/level/level-route.js";
import { errorCode } from "../../src/domain/errors.js";

const line = (i: number, t = 1_700_000_000_000 + i) => `{"level":30,"time":${t},"msg":"m${i}"}\n`;

async function take<T>(it: AsyncIterator<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push((await it.next()).value as T);
  return out;
}

test("history keeps the newest lines within maxBytes, and since filters by the line's time", async () => {
  const ring = new LogRing({ maxBytes: 10 * line(0).length, followerLines: 5 });
  for (let i = 0; i < 100; i++) ring.write(line(i));
  const all = [];
  for await (const l of ring.read({ follow: false }, new AbortController().signal)) all.push(l.json);
  assert.ok(all.length <= 10 && all.length >= 9, String(all.length));
  assert.match(all.at(-1)!, /"m99"/);
  const recent = [];
  for await (const l of ring.read({ follow: false, sinceMs: 1_700_000_000_097 }, new AbortController().signal)) recent.push(l.json);
  assert.deepEqual(recent.map((j) => /"m(\d+)"/.exec(j)![1]), ["97", "98", "99"]);
});

test("a line split across writes is one line", async () => {
  const ring = new LogRing();
  const l = line(1);
  ring.write(l.slice(0, 7));
  ring.write(l.slice(7));
  const got = [];
  for await (const x of ring.read({ follow: false }, new AbortController().signal)) got.push(x.json);
  assert.deepEqual(got, [l.trim()]);
});

test("a follower gets new lines; one that falls behind loses the oldest and is told how many", async () => {
  const ring = new LogRing({ maxBytes: 1 << 20, followerLines: 3 });
  const ac = new AbortController();
  const it = ring.read({ follow: true }, ac.signal)[Symbol.asyncIterator]();
  const first = it.next(); // registers the follower
  ring.write(line(1));
  assert.match((await first).value!.json, /"m1"/);
  for (let i = 2; i <= 10; i++) ring.write(line(i));
  const got = await take(it, 3);
  assert.deepEqual(got.map((g) => /"m(\d+)"/.exec(g.json)![1]), ["8", "9", "10"]);
  assert.equal(got[0]!.dropped, 6);
  assert.equal(got[1]!.dropped, 0);
  const pending = it.next();
  ac.abort();
  assert.equal((await pending).done, true);
});

test("secret values are masked, raw and JSON-escaped; short values are left alone", () => {
  const values = secretValues({ passwords: { vm_root: 'p"ss-w0rd-42' }, port: "22", list: ["tok-abcdef"] });
  assert.deepEqual(values.sort(), ['p"ss-w0rd-42', "tok-abcdef"].sort());
  const out = redactValues(JSON.stringify({ msg: 'oops p"ss-w0rd-42 and tok-abcdef on 22' }), values);
  assert.ok(!out.includes("w0rd") && !out.includes("abcdef"), out);
  assert.match(out, /on 22/);
});

test("a level path routes to the named child, or fails typed", () => {
  assert.equal(routeLevel("l1", undefined, ["l2"]), undefined);
  assert.equal(routeLevel("l1", ["l1"], ["l2"]), undefined);
  assert.deepEqual(routeLevel("l1", ["l1", "l2", "l3"], ["l2"]), { child: "l2", rest: ["l2", "l3"] });
  assert.throws(() => routeLevel("l1", ["l0", "l1"], ["l2"]), (e) => errorCode(e) === "LevelNotFound");
  assert.throws(() => routeLevel("l1", ["l1", "l9"], ["l2"]), (e) => errorCode(e) === "LevelNotFound");
});
