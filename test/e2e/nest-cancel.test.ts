// Ctrl-C at the top cancels the whole tree: with l3 held inside its sync
// phase, SIGINT to hsctl must end hsctl (exit 130) and the cancellation must
// travel down every hop, so l2 records l3's sync as Cancelled; a re-run then
// completes. Real processes throughout.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines } from "../helpers/hsctl.js";

const { l0, env } = await e2eTree("hsd-cancel-", { HSD_FAULTS: "l3:sync:hold-once" });

/** Polls (bounded) until `read` returns a value; throws after `ms`. */
async function eventually<T>(ms: number, read: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await read().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("SIGINT at hsctl cancels every level down to the deepest running phase", async () => {
  let interrupted = false;
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 120_000, (line, kill) => {
    if (interrupted || !line.startsWith("{")) return;
    const ev = JSON.parse(line);
    if (ev.level === "l0/l1/l2/l3" && ev.phase === "sync" && ev.kind === "log" && /fault: holding/.test(ev.message ?? "")) {
      interrupted = true;
      kill(); // SIGINT, as Ctrl-C would
    }
  });
  assert.ok(interrupted, `never saw l3 holding in its sync:\n${r.stdout.slice(-1500)}`);
  assert.equal(r.code, 130, r.stderr);

  // l2 is the parent driving l3's sync: its journal must record the cancel.
  const l2Journal = join(l0, "state/levels/l1/state/levels/l2/state/journal.json");
  const rec = await eventually(20_000, async () => {
    const j = JSON.parse(await readFile(l2Journal, "utf8"));
    const sync = j.children?.l3?.phases?.sync;
    return sync?.kind === "failed" ? sync : undefined;
  });
  assert.equal(rec.failure.code, "Cancelled");

  const again = await hsctl(["nest", "--depth", "3", "--json"], env, 120_000);
  assert.equal(again.code, 0, again.stderr + again.stdout.slice(-1500));
  const ready = jsonLines(again.stdout).filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level).sort();
  assert.deepEqual(ready, ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);
});
