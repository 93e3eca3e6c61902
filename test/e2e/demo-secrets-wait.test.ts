// A cold level 0 serves its demo exports ahead of the checkouts (written from
// the build's packs), but the secrets phase reads level 0's site-config files:
// it waits for that checkout, so a slow placement never hands l1 an empty
// secrets.yaml. Real hsd processes; the slowness is a test fault (delay-<ms>).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";

const { l0, env } = await e2eTree("hsd-demo-secrets-", { HSD_FAULTS: "l0:demo-place-site-config:delay-2500" });

test("l1 gets level 0's demo secrets and site.yaml even when site-config's checkout is placed late", async () => {
  const r = await hsctl(["nest", "--depth", "1", "--json"], env, 120_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-1500));
  // The fault really made the checkout late: l1's sync started before site-config was placed.
  const l1SyncAt = Date.parse(String(jsonLines(r.stdout).find((e) => e.level === "l0/l1" && e.phase === "sync" && e.kind === "started")?.time));
  const log = (await readFile(join(l0, "hsd.log"), "utf8")).split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { msg: string; repo?: string; time: number });
  const placedAt = log.find((l) => l.msg === "no repos configured: generated a demo repo" && l.repo === "site-config")?.time;
  assert.ok(placedAt !== undefined && placedAt > l1SyncAt, "site-config was placed before l1's sync: the fault did not slow it");
  const l1 = (await levelRoots(l0))[1]!;
  const want = parse(await readFile(join(l0, "demo", "site-config", "secrets.yaml"), "utf8"));
  const got = parse(await readFile(join(l1, "homestak", "config", "secrets.yaml"), "utf8"));
  assert.equal(got.passwords?.vm_root, want.passwords.vm_root);
  assert.equal(await readFile(join(l1, "homestak", "config", "site.yaml"), "utf8"), await readFile(join(l0, "demo", "site-config", "site.yaml"), "utf8"));
});
