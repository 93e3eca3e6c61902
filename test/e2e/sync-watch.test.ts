// End to end: watch mode (`sync: { mode: watch, debounce: 300ms }` in level
// 0's hsd.yaml). A commit, then an uncommitted edit, in the operator's
// checkout reach level 1 with no `hsctl sync`: level 0's hsd notices, runs
// the wave, and tells level 1 over its gRPC tunnel. Waits are bounded polls of
// `hsctl status`, never fixed sleeps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile, mkdir, appendFile } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl } from "../helpers/hsctl.js";
import { addCommit } from "../../src/demo/demo-repos.js";

const { env } = await e2eTree("hsd-syncwatch-");
const REPO = "ansible";

type Status = { name: string; repos: { name: string; servedCommit: string; previousCommit?: string }[]; children: Status[] };

/** Polls status until level 1 serves something other than `old` for REPO; returns it ("" on timeout). */
async function l1MovesFrom(old: string, ms: number): Promise<string> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const s = await hsctl(["status", "--json"], env, 30_000);
    if (s.code === 0) {
      const l1 = (JSON.parse(s.stdout) as Status).children[0];
      const c = l1?.repos.find((x) => x.name === REPO)?.servedCommit ?? "";
      if (c && c !== old) return c;
    }
  }
  return "";
}

test("watch mode: a commit and an uncommitted edit at level 0 reach level 1 without hsctl sync", async () => {
  await mkdir(env.HSD_ROOT, { recursive: true, mode: 0o700 });
  await writeFile(join(env.HSD_ROOT, "hsd.yaml"), [
    "level:", "  name: l0", "ssh:", "  host: 127.0.0.1", "  port: 0", "  advertise_host: 127.0.0.1",
    "sync:", "  mode: watch", "  debounce: 300ms", "",
  ].join("\n"), { mode: 0o600 });
  const r = await hsctl(["nest", "--depth", "1", "--json"], env, 120_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-2000)}`);
  const st = JSON.parse((await hsctl(["status", "--json"], env, 30_000)).stdout) as Status;
  const start = st.children[0]!.repos.find((x) => x.name === REPO)!.servedCommit;

  const commit = await addCommit(join(env.HSD_ROOT, "demo", REPO), { "playbooks/watched.yml": "- hosts: all\n" }, "watched commit");
  assert.equal(await l1MovesFrom(start, 60_000), commit, "level 1 got the commit by itself");

  // Uncommitted work travels too, as the _working snapshot on top of the commit.
  await appendFile(join(env.HSD_ROOT, "demo", REPO, "playbooks", "watched.yml"), "  gather_facts: false\n");
  const snap = await l1MovesFrom(commit, 60_000);
  assert.ok(snap && snap !== commit, "level 1 got the snapshot of the uncommitted edit");
});
