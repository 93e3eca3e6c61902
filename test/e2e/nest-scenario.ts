// End to end: `hsctl nest --depth 3` on the local provider, with real hsd
// processes, real SSH tunnels, real git fetches and real gRPC. Then status,
// the secret checks, and destroy leaving nothing behind. Registered by
// nest-local.test.ts (process isolation) and nest-netns.test.ts (netns).
import { test, after } from "node:test";
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import { mkdtemp, rm, readFile, access, readdir, mkdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { hsctl, jsonLines, levelRoots, hsdProcessesUnder, mode } from "../helpers/hsctl.js";
import { scanForSecret } from "../helpers/secret-scan.js";

const STEPS_YAML = `level: { name: l0 }
ssh: { host: 0.0.0.0, port: 0, advertise_host: 127.0.0.1 }
configure:
  steps:
    - name: pve-config
      run: [./run.sh, scenario, run, pve-config, --local, --dry-run]
      cwd: iac-driver
    - name: proc-dump
      run: [sh, -c, 'cat /proc/$$/cmdline /proc/$$/environ > "$HOMESTAK_ROOT/step-proc.bin"']
`;

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

test("nest --depth 3 builds three ready levels whose repos match level 0, laid out as homestak's, each running its steps", async () => {
  // Level 0's steps: the demo iac-driver's run.sh, and one that dumps its own
  // /proc cmdline and environ (a running step's) for the canary scan.
  await mkdir(env.HSD_ROOT, { recursive: true });
  await writeFile(join(env.HSD_ROOT, "hsd.yaml"), STEPS_YAML);
  const r = await hsctl(["nest", "--depth", "3", "--isolation", isolation, "--json"], env, 180_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-3000)}`);
  const events = jsonLines(r.stdout);
  const ready = events.filter((e) => e.phase === "nest" && e.kind === "finished").map((e) => e.level);
  assert.deepEqual(ready.sort(), ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);
  // Level 0's export refresh for the nest begins once l1 is past its preflight and provision, and is over before l1's sync.
  const at = (level: string, phase: string, kind: string) => events.findIndex((e) => e.level === level && e.phase === phase && e.kind === kind);
  assert.ok(at("l0/l1", "provision", "finished") >= 0 && at("l0", "sync", "started") > at("l0/l1", "provision", "finished"), "level 0's refresh began before l1's provision ended");
  assert.ok(at("l0", "sync", "finished") >= 0 && at("l0", "sync", "finished") < at("l0/l1", "sync", "started"), "l1's sync started before level 0's refresh ended");

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

  // homestak's layout at every level below 0, its site.yaml unchanged, its
  // secrets.yaml scoped (0600, passed-down keys plus the ancestors' public
  // keys, never an ancestor's api_tokens), and the canaries nowhere else.
  const roots = await levelRoots(env.HSD_ROOT);
  assert.equal(roots.length, 4);
  assert.ok(Buffer.byteLength(join(roots[3]!, "run", "hsd.sock")) > 108, "level 3's socket path must exceed sun_path here");
  const l0Config = join(env.HSD_ROOT, "demo", "site-config");
  const l0Site = await readFile(join(l0Config, "site.yaml"));
  const demo = parse(await readFile(join(l0Config, "secrets.yaml"), "utf8"));
  const secret = String(demo.passwords.vm_root);
  const topToken = String(demo.api_tokens.l0);
  assert.ok(secret.length >= 8 && topToken.length >= 8);
  const pub = async (lr: string) => (await readFile(join(lr, "keys", "id_ed25519.pub"), "utf8")).trim();
  for (let i = 1; i < roots.length; i++) {
    const lr = roots[i]!;
    const hs = join(lr, "homestak");
    for (const t of ["bootstrap", "config", "iac/ansible", "iac/iac-driver", "iac/tofu", "iac/packer"]) {
      await access(join(hs, t, ".git"));
    }
    await assert.rejects(access(join(lr, "repos", "work")), "no hsd-private working trees");
    assert.deepEqual(await readFile(join(hs, "config", "site.yaml")), l0Site, `${lr}: site.yaml`);
    const f = join(hs, "config", "secrets.yaml");
    assert.equal(await mode(f), 0o600, f);
    const sec = parse(await readFile(f, "utf8"));
    assert.deepEqual(Object.keys(sec).sort(), ["auth", "passwords", "ssh_keys"], lr);
    assert.deepEqual(sec.passwords, demo.passwords);
    assert.deepEqual(sec.auth, demo.auth);
    const ancestors = Array.from({ length: i }, (_, k) => `l${k}`);
    assert.deepEqual(Object.keys(sec.ssh_keys).sort(), ["operator", ...ancestors, "self"].sort(), lr);
    assert.equal(sec.ssh_keys.operator, demo.ssh_keys.operator);
    for (let k = 0; k < i; k++) assert.equal(sec.ssh_keys[`l${k}`], await pub(roots[k]!), `${lr}: key of l${k}`);
    assert.equal(sec.ssh_keys.self, await pub(lr));
    // The step ran at this level, from its own trees, and saw what it needs (and no secret) in its process.
    const proc = await readFile(join(hs, "step-proc.bin"), "utf8");
    assert.ok(proc.includes(`HOMESTAK_ROOT=${hs}`) && proc.includes(`HSD_LEVEL_PATH=${["l0", ...ancestors.slice(1), `l${i}`].join("/")}`), proc);
    assert.ok(proc.includes(`HSD_LEVEL_DEPTH=${i}`) && /HSD_PARENT_ADDRESS=[^\0]+:\d+/.test(proc), proc);
  }
  const ran = events.filter((e) => e.phase === "configure" && e.kind === "log" && /pve-config\| layout: root=/.test(e.message ?? "")).map((e) => e.level);
  assert.deepEqual(ran.sort(), ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]);
  const hits = await scanForSecret(root, secret, {
    allow: (p) => p === join(l0Config, "secrets.yaml") || (p.endsWith("/homestak/config/secrets.yaml") && p.startsWith(env.HSD_ROOT)),
  });
  assert.deepEqual(hits, []);
  assert.deepEqual(await scanForSecret(root, topToken, { allow: (p) => p === join(l0Config, "secrets.yaml") }), []);
  for (const c of [secret, topToken, String(demo.auth.signing_key)]) {
    assert.ok(!r.stdout.includes(c) && !r.stderr.includes(c), "secret in hsctl output");
  }
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
