// beginImages (src/level/images-ahead.ts): a first sync's images begun at the
// handshake; the sync joins the transfer (the last progress so far first), or
// fetches again when it had already failed.

import { test } from "node:test";
import assert from "node:assert/strict";
import { beginImages } from "../../src/level/images-ahead.js";
import type { SyncProgress } from "../../src/level/repo-ops.js";
import type { FetchImageResult } from "../../src/images/fetch-image.js";

const progress = (done: number): SyncProgress => ({ repo: "image:pve-9", phase: "image", loaded: done, total: 100, unit: "bytes" });
const result: Record<string, FetchImageResult> = { "pve-9": { sha256: "ab", size: 100, bytes: 100, reused: false, resumedFrom: 0 } };

test("the sync joins the transfer under way: the last progress so far, then every later one; settled says it got in", async () => {
  let report!: (p: SyncProgress) => void;
  let finish!: () => void;
  let transferSignal!: AbortSignal;
  const ahead = beginImages((onProgress, signal) => {
    report = onProgress;
    transferSignal = signal;
    return new Promise((resolve) => { finish = () => resolve(result); });
  });
  report(progress(10));
  report(progress(40));
  const seen: number[] = [];
  const joined = ahead.join((p) => seen.push(p.loaded), new AbortController().signal);
  assert.ok(joined);
  report(progress(100));
  finish();
  assert.deepEqual(await joined, result);
  assert.deepEqual(seen, [40, 100]);
  assert.equal(await ahead.settled, true);
  assert.equal(transferSignal.aborted, false);
});

test("the joining sync's signal ends the transfer; one that failed before the join is not joined (the sync fetches again)", async () => {
  let transferSignal!: AbortSignal;
  const running = beginImages((_p, signal) => { transferSignal = signal; return new Promise(() => {}); });
  const stop = new AbortController();
  running.join(() => {}, stop.signal);
  stop.abort(new Error("sync cancelled"));
  assert.equal(transferSignal.aborted, true);

  const failed = beginImages(() => Promise.reject(Object.assign(new Error("refused"), { code: "AccessDenied" })));
  assert.equal(await failed.settled, false);
  assert.equal(failed.join(() => {}, new AbortController().signal), undefined);
});
