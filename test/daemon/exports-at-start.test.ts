// Level 0 serves its exports from the start: right after `hsd run` is ready,
// a reader's `git clone` over the SSH endpoint works with no sync or nest
// first (the clone waits for the first export instead of "no such repo").
// Real hsd, real OpenSSH client, real git.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { WAIT_MS, runHsctl, runProcess, startHsd, type HsdProcess } from "./daemon-process.js";
import { makeKeyPair } from "../helpers/git-fixtures.js";
import { DEMO_REPO_NAMES } from "../../src/demo/demo-repos.js";

const root = await mkdtemp(join(tmpdir(), "hsd-exports-start-"));
let hsd: HsdProcess | undefined;
after(async () => {
  await hsd?.kill();
  await rm(root, { recursive: true, force: true });
});

test("a fresh level 0 (demo repos, never synced) serves git clone right after it is ready", async () => {
  const l0 = join(root, "l0");
  await mkdir(l0, { recursive: true, mode: 0o700 });
  await writeFile(join(l0, "hsd.yaml"), "ssh:\n  host: 127.0.0.1\nlog:\n  level: info\n", { mode: 0o600 });
  hsd = startHsd(["run", "--root", l0]);
  const ready = await hsd.ready;

  const key = await makeKeyPair(root, "reader");
  const add = await runHsctl(["--root", l0, "access", "add", "--role", "reader", `${key.privatePath}.pub`]);
  assert.equal(add.code, 0, add.stderr);

  const hostPub = spawnSync("ssh-keygen", ["-y", "-f", join(l0, "keys", "ssh_host_ed25519_key")], { encoding: "utf8" }).stdout.trim();
  const known = join(root, "known_hosts");
  await writeFile(known, `[127.0.0.1]:${ready.sshPort} ${hostPub}\n`);
  const env = {
    GIT_SSH_COMMAND: `ssh -i ${key.privatePath} -o IdentitiesOnly=yes -o UserKnownHostsFile=${known} -o StrictHostKeyChecking=yes -o BatchMode=yes`,
    GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1",
  };
  const clones = await Promise.all(["bootstrap", "iac-driver"].map((name) =>
    runProcess("git", ["clone", "-q", `ssh://hsd@127.0.0.1:${ready.sshPort}/${name}`, join(root, "clones", name)], env, root)));
  for (const c of clones) assert.equal(c.code, 0, c.stderr);
  const head = await runProcess("git", ["-C", join(root, "clones", "bootstrap"), "rev-parse", "HEAD"], env, root);
  assert.match(head.stdout.trim(), /^[0-9a-f]{40}$/);
  // The demo set came from the packs the build prebuilt (dist/demo/packs), not from fast-import on the daemon's watch,
  // each export straight from its pack: the checkouts are placed behind them (the clones need not wait for them).
  const placed = await placedDemoRepos(hsd, DEMO_REPO_NAMES.length);
  assert.deepEqual(placed.map((l) => l.repo).sort(), [...DEMO_REPO_NAMES].sort());
  assert.deepEqual([...new Set(placed.map((l) => l.from))], ["prebuilt"]);
  assert.deepEqual([...new Set(placed.map((l) => l.export))], ["from the pack"]);
  // What was cloned is what the operator's checkout holds.
  const checkout = await runProcess("git", ["-C", join(l0, "demo", "bootstrap"), "rev-parse", "HEAD"], env, root);
  assert.equal(head.stdout.trim(), checkout.stdout.trim());

  // Once the checkouts are in place, a sync reads them again: an edit the operator made is exported.
  await writeFile(join(l0, "demo", "bootstrap", "README.md"), "the operator's edit\n");
  const sync = await runHsctl(["--root", l0, "sync", "--json"]);
  assert.equal(sync.code, 0, sync.stderr);
  const served = await runProcess("git", ["ls-remote", `ssh://hsd@127.0.0.1:${ready.sshPort}/bootstrap`, "HEAD"], env, root);
  const servedCommit = served.stdout.trim().split(/\s/)[0]!;
  assert.notEqual(servedCommit, checkout.stdout.trim());
  const parent = await runProcess("git", ["--git-dir", join(l0, "repos", "bootstrap.git"), "rev-parse", `${servedCommit}^`], env, root);
  assert.equal(parent.stdout.trim(), checkout.stdout.trim());
});

interface PlacedLine { msg: string; repo?: string; from?: string; export?: string }

/** hsd's "generated a demo repo" lines, once there are `n` of them (bounded by WAIT_MS). */
function placedDemoRepos(p: HsdProcess, n: number): Promise<PlacedLine[]> {
  const lines = () => p.stdout().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as PlacedLine)
    .filter((l) => l.msg === "no repos configured: generated a demo repo");
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { p.proc.stdout!.off("data", check); reject(new Error(`${lines().length} of ${n} demo repos placed after ${WAIT_MS} ms`)); }, WAIT_MS);
    function check(): void {
      if (lines().length < n) return;
      clearTimeout(timer);
      p.proc.stdout!.off("data", check);
      resolve(lines());
    }
    p.proc.stdout!.on("data", check);
    check();
  });
}
