// End to end: `hsctl nest --depth 3` on the local provider, with real hsd
// processes, real SSH tunnels, real git fetches and real gRPC. Then status,
// the secret checks, and destroy leaving nothing behind. Registered by
// nest-local.test.ts (process isolation) and nest-netns.test.ts (netns).
import { test, after } from "node:test";
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import { mkdtemp, rm, readFile, access, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { hsctl, jsonLines, levelRoots, hsdProcessesUnder, mode } from "../helpers/hsctl.js";
import { scanForSecret } from "../helpers/secret-scan.js";

export async function nestScenario(isolation: "process" | "netns"): Promise<void> {
const root = await mkdtemp(join(tmpdir(), `hsd-e2e-${isolation}-`));
// As a clone in a deep directory: level 2's and 3's API sockets are then
// longer than sun_path (108 bytes) and must still be bound and dialled.
const env = { HSD_ROOT: join(root, "a-checkout-in-a-rather-deep-directory-of-the-operator", "l0") };
const netnsNow = () => execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n").filter(Boolean).map((l) => l.split(" ")[0]!);
/** The namespaces this tree's journals recorded (other tests may create their own concurrently). */
const treeNetns = async (): Promise<string[]> => {
  const out: string[] = [];
  for (const lr of await levelRoots(env.HSD_ROOT)) {
    const j = JSON.parse(await readFile(join(lr, "state", "journal.json"), "utf8").catch(() => "{}"));
    for (const c of Object.values(j.children ?? {}) as { handle?: { data?: { netns?: { nsName: string } } } }[]) {
      if (c.handle?.data?.netns) out.push(c.handle.data.netns.nsName);
    }
  }
  return out;
};
let recordedNetns: string[] = [];

after(async () => {
  await hsctl(["destroy", "--json"], env, 60_000).catch(() => undefined);
  for (const pid of await hsdProcessesUnder(root)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  await rm(root, { recursive: true, force: true });
});

type Status = { name: string; state: string; repos: { name: string; servedCommit: string }[]; children: Status[]; outOfSync: boolean };

test("nest --depth 3 builds three ready levels whose repos match level 0", async () => {
  const r = await hsctl(["nest", "--depth", "3", "--isolation", isolation, "--json"], env, 180_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-3000)}`);
  const events = jsonLines(r.stdout);
  const ready = events.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level);
  assert.deepEqual(ready.sort(), ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);

  const s = await hsctl(["status", "--json"], env, 30_000);
  assert.equal(s.code, 0, s.stderr);
  const st = JSON.parse(s.stdout) as Status;
  const chain: Status[] = [];
  for (let n: Status | undefined = st; n; n = n.children[0]) chain.push(n);
  assert.deepEqual(chain.map((n) => n.name), ["l0", "l1", "l2", "l3"]);
  assert.ok(chain.slice(1).every((n) => n.state === "ready"), JSON.stringify(chain.map((n) => n.state)));
  if (isolation === "netns") {
    // Each level below 0 is reached only at its own veth address, as a nested VM would be.
    for (const lvl of chain.slice(1)) assert.match((lvl as unknown as { address: string }).address, /^10\.231\./, lvl.name);
    recordedNetns = await treeNetns();
    assert.equal(recordedNetns.length, 3);
    for (const n of recordedNetns) assert.ok(netnsNow().includes(n), n);
  }
  const top = new Map(st.repos.map((x) => [x.name, x.servedCommit]));
  assert.equal(top.size, 6);
  for (const lvl of chain.slice(1)) {
    assert.equal(lvl.outOfSync, false);
    for (const [name, commit] of top) assert.equal(lvl.repos.find((x) => x.name === name)?.servedCommit, commit, `${lvl.name}/${name}`);
  }

  // Secrets: 0600, only scoped keys below level 0, and the demo secret nowhere else.
  const roots = await levelRoots(env.HSD_ROOT);
  assert.equal(roots.length, 4);
  assert.ok(Buffer.byteLength(join(roots[3]!, "run", "hsd.sock")) > 108, "level 3's socket path must exceed sun_path here");
  const demo = parse(await readFile(join(env.HSD_ROOT, "demo", "site-config", "secrets.yaml"), "utf8"));
  const secret = String(demo.passwords.vm_root);
  assert.ok(secret.length >= 8);
  const topSecrets = parse(await readFile(join(roots[0]!, "secrets.yaml"), "utf8"));
  for (const lr of roots) {
    const f = join(lr, "secrets.yaml");
    assert.equal(await mode(f), 0o600, f);
    const sec = parse(await readFile(f, "utf8"));
    if (lr === roots[0]) continue;
    assert.deepEqual(Object.keys(sec).sort(), ["passwords", "site", "ssh", "ssh_keys", "tokens"], lr);
    assert.deepEqual(Object.keys(sec.passwords), ["vm_root"]);
    assert.equal(sec.passwords.vm_root, secret);
    assert.notEqual(sec.tokens.hsd, topSecrets.tokens.hsd, "a child must generate its own tokens");
    assert.ok(sec.ssh_keys.length >= 1);
  }
  const hits = await scanForSecret(env.HSD_ROOT, secret, {
    allow: (p) => p.endsWith("/secrets.yaml") && !p.includes("/repos/"),
  });
  assert.deepEqual(hits, []);
  assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), "secret in hsctl output");
});

test("destroy leaves no process, no level directory and no level-0 daemon; a second destroy is a no-op", async () => {
  const d = await hsctl(["destroy", "--json"], env, 60_000);
  assert.equal(d.code, 0, d.stderr);
  assert.deepEqual(await hsdProcessesUnder(root), []);
  assert.deepEqual(await readdir(join(env.HSD_ROOT, "state", "levels")).catch(() => []), []);
  await assert.rejects(access(join(env.HSD_ROOT, "run", "hsd.sock")));
  const again = await hsctl(["destroy"], env, 30_000);
  assert.equal(again.code, 0, again.stderr);
  if (isolation === "netns") assert.deepEqual(netnsNow().filter((n) => recordedNetns.includes(n)), []);
});
}
