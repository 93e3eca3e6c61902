// Shared by the end-to-end tests of a level's reboot inside configure
// (test/e2e/nest-reboot.test.ts, nest-unannounced-reboot.test.ts): level 0's
// hsd.yaml with three counting steps around an install step that runs at one
// depth only, the tree's states as hsctl status shows them, and what both
// assert of the stream and the level after the nest.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { hsctl } from "./hsctl.js";

/**
 * Level 0's config: steps `before` and `after` append to marks/<step>-<level>;
 * between them the step `name` (an sh script) runs at `depth` only, or
 * everywhere when depth is null.
 */
export function rebootTreeConfig(marks: string, install: string, depth: number | null, name = "install"): string {
  return `level: { name: l0 }
ssh: { host: 127.0.0.1, port: 0 }
configure:
  steps:
    - name: before
      run: [sh, -c, 'echo run >> "${marks}/before-$HSD_LEVEL_NAME"']
    - name: ${name}
      run: [sh, -c, ${JSON.stringify(install)}]
${depth === null ? "" : `      when: { min_depth: ${depth}, max_depth: ${depth} }\n`}    - name: after
      run: [sh, -c, 'echo run >> "${marks}/after-$HSD_LEVEL_NAME"']
`;
}

/** The non-empty lines of a file. */
export async function fileLines(p: string): Promise<string[]> {
  return (await readFile(p, "utf8")).split("\n").filter(Boolean);
}

/** `name:state` of each level down the first child of each, as `hsctl status --json` reports them. */
export async function statusChain(env: Record<string, string>): Promise<string[]> {
  const s = await hsctl(["status", "--json"], env, 30_000);
  if (s.code !== 0) throw new Error(`hsctl status failed: ${s.stderr}`);
  type St = { name: string; state: string; children: St[] };
  const chain: string[] = [];
  for (let n: St | undefined = JSON.parse(s.stdout) as St; n; n = n.children[0]) chain.push(`${n.name}:${n.state}`);
  return chain;
}

/** Every phase of a level below 0, in order: a reboot inside configure must start none of them twice. */
const LEVEL_PHASES = ["preflight", "provision", "boot", "install", "handshake", "sync", "secrets", "configure", "nest"];

/**
 * The operator's stream of a nest in which `level` rebooted during configure:
 * one configure, started once, with exactly one `rebooting` (its message
 * matching `reason`), the parent's re-attach after it, the resumed install
 * step's output after that, and the configure's end last; every phase of the
 * level started once; nothing failed.
 */
export function assertRebootInsideConfigure(ev: Record<string, any>[], level: string, reason: RegExp): void {
  assert.ok(!ev.some((e) => e.kind === "failed"), "something failed");
  const c = ev.filter((e) => e.level === level && e.phase === "configure");
  const kinds = c.map((e) => e.kind);
  assert.equal(kinds.filter((k) => k === "started").length, 1, kinds.join(","));
  const reboots = c.filter((e) => e.kind === "rebooting");
  assert.equal(reboots.length, 1, `rebooting events: ${kinds.join(",")}`);
  assert.match(reboots[0]!.message, reason);
  const iReboot = kinds.indexOf("rebooting");
  const iBack = c.findIndex((e) => /is back after .* re-attaching to its configure/.test(e.message ?? ""));
  assert.ok(iBack > iReboot, c.map((e) => e.message).join("\n"));
  assert.ok(c.findIndex((e) => /install\| packages installed after reboot 1/.test(e.message ?? "")) > iBack, "the resumed step's output reached the stream");
  assert.equal(kinds.at(-1), "finished");
  const started = ev.filter((e) => e.level === level && e.kind === "started").map((e) => e.phase);
  assert.deepEqual(started, LEVEL_PHASES);
}

/**
 * After the nest: at the level in `levelRoot`, `before` and `after` ran once,
 * `install` finished after one reboot, configure finished; the hsd pids the
 * install step wrote before and after the reboot (marks/hsd-{before,after}.pid).
 */
export async function assertStepResumedOnce(marks: string, levelRoot: string, name: string): Promise<{ before: number; after: number }> {
  assert.equal((await fileLines(join(marks, `before-${name}`))).length, 1, "the step before the reboot ran again");
  assert.equal((await fileLines(join(marks, `after-${name}`))).length, 1);
  const journal = JSON.parse(await readFile(join(levelRoot, "state", "journal.json"), "utf8"));
  assert.equal(journal.steps.before.kind, "finished");
  assert.equal(journal.steps.install.kind, "finished");
  assert.equal(journal.steps.install.reboots, 1);
  assert.equal(journal.configured.kind, "finished");
  const before = Number(await readFile(join(marks, "hsd-before.pid"), "utf8"));
  const after = Number(await readFile(join(marks, "hsd-after.pid"), "utf8"));
  assert.notEqual(before, after, "the same hsd ran the step before and after the reboot");
  return { before, after };
}
