// Shows (and, asked to, keeps) a pve e2e tree's daemon logs when a test failed: every level's hsd.log
// lives in its VM's root dir, which the tree's close() removes with the
// simulators, so an error a level reported (e.g. `Internal` in sync) could not
// be traced to its throw. Test-only: imported by test/pve/pve-tree.ts and the pve e2e tests.

import { afterEach } from "node:test";
import { copyFile, mkdtemp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** What a tree exposes for its logs: its temp root, level 0's dir, each simulator's root. */
export interface LoggedTree {
  readonly l0: string;
  readonly sims: readonly { readonly root: string; readonly node: string }[];
  /** Names of the tests that failed while the tree was up (set by keepLogsOnFailure). */
  readonly failed: string[];
}

/** The tree's daemon logs: level 0's, then each VM's hsd.log and systemctl.log, named by node and vmid. */
export async function treeLogFiles(t: LoggedTree): Promise<{ name: string; path: string }[]> {
  const out = [{ name: "l0-hsd.log", path: join(t.l0, "hsd.log") }];
  for (const s of t.sims) {
    const guests = join(s.root, "guests");
    for (const vmid of (await readdir(guests).catch(() => [] as string[])).sort()) {
      for (const f of ["hsd.log", "systemctl.log"]) out.push({ name: `${s.node}-vm${vmid}-${f}`, path: join(guests, vmid, f) });
    }
  }
  return out;
}

/**
 * Prints each log's error lines (pino level >= 50, the last 15): an untyped
 * error's stack is there. With HSD_TEST_KEEP_LOGS=1 it also copies the whole
 * logs into a temp dir that is kept (and says where); otherwise a failed run
 * leaves no temp dir behind, like a passing one.
 */
export async function keepTreeLogs(t: LoggedTree, why: string): Promise<string | undefined> {
  const keep = process.env.HSD_TEST_KEEP_LOGS === "1";
  const dir = keep ? await mkdtemp(join(tmpdir(), "hsd-pve-logs-")) : undefined;
  const report: string[] = [dir ? `pve tree logs kept in ${dir} (${why})` : `pve tree logs (${why}; HSD_TEST_KEEP_LOGS=1 keeps them whole)`];
  for (const f of await treeLogFiles(t)) {
    const text = await readFile(f.path, "utf8").catch(() => undefined);
    if (text === undefined) continue;
    if (dir) await copyFile(f.path, join(dir, f.name)).catch(() => {});
    const errors = text.split("\n").filter((l) => /"level":(5|6)\d/.test(l)).slice(-15);
    if (errors.length > 0) report.push(`--- ${f.name} (errors):`, ...errors);
  }
  process.stderr.write(`${report.join("\n")}\n`);
  return dir;
}

/** In a pve e2e test file: records each failed test on the tree, so its close() keeps the logs. */
export function keepLogsOnFailure(tree: () => LoggedTree | undefined): void {
  afterEach((t) => {
    // Node 20.12+ has TestContext.passed; @types/node for 20 does not list it yet.
    if (!(t as { passed?: boolean }).passed) tree()?.failed.push(t.name);
  });
}
