// hsd as a real process: readiness (ready.json + HSD_READY_FD), hsctl status,
// grpc.health, server reflection from a foreign (python) client, SIGTERM,
// a second daemon refused, a stale socket replaced, a broken config refused,
// hsctl without a daemon. Needs `npm run build` first (npm test does it).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, readdir, rm, stat, writeFile, readFile, access } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import * as grpc from "@grpc/grpc-js";
import { REPO, runHsctl, runProcess, startHsd, WAIT_MS, type HsdProcess } from "./daemon-process.js";
import { holdPort } from "../helpers/hold-port.js";

const cleanups: (() => Promise<void>)[] = [];
after(async () => { for (const c of cleanups.reverse()) await c().catch(() => {}); });

async function tempRoot(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "hsd-daemon-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function started(args: string[], env: NodeJS.ProcessEnv = {}): HsdProcess {
  const h = startHsd(args, env);
  cleanups.push(() => h.kill());
  return h;
}

const exists = (p: string) => access(p).then(() => true, () => false);

/** grpc.health.v1.Health/Check with a hand-encoded request; returns the status enum number. */
function healthCheck(socket: string, service: string): Promise<number> {
  const client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
  const name = Buffer.from(service);
  const req = service ? Buffer.concat([Buffer.from([0x0a, name.length]), name]) : Buffer.alloc(0);
  return new Promise<number>((resolve, reject) => {
    client.makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, req, new grpc.Metadata(),
      { deadline: Date.now() + WAIT_MS }, (err, res) => {
        client.close();
        if (err) return reject(err);
        // HealthCheckResponse { status = 1 (varint) }; absent means UNKNOWN (0).
        resolve(res && res.length >= 2 && res[0] === 0x08 ? res[1]! : 0);
      });
  });
}

test("a level hsd serves status, health and reflection, then stops cleanly on SIGTERM", async () => {
  const root = await tempRoot();
  const hsd = started(["run", "--root", root]);
  const ready = await hsd.ready;
  const socket = join(root, "run/hsd.sock");
  assert.equal(ready.socket, socket);
  assert.equal(ready.pid, hsd.proc.pid);
  assert.equal(ready.version, JSON.parse(await readFile(join(REPO, "package.json"), "utf8")).version);
  assert.deepEqual(JSON.parse(await readFile(join(root, "run/ready.json"), "utf8")), ready);
  assert.equal((await stat(join(root, "run/ready.json"))).mode & 0o777, 0o600);
  assert.equal((await stat(socket)).mode & 0o777, 0o600);
  assert.equal((await stat(join(root, "run"))).mode & 0o777, 0o700);

  const st = await runHsctl(["--root", root, "status", "--json"]);
  assert.equal(st.code, 0, st.stderr);
  const status = JSON.parse(st.stdout);
  assert.equal(status.name, "l0");
  assert.equal(status.state, "ready");
  assert.equal(status.hsdVersion, ready.version);

  const tree = await runHsctl(["status", "--socket", socket]);
  assert.equal(tree.code, 0, tree.stderr);
  assert.match(tree.stdout, /^l0\s+ready/);

  assert.equal(await healthCheck(socket, ""), 1);
  assert.equal(await healthCheck(socket, "homestak.nest.v1.NestService"), 1);

  for (const version of ["v1", "v1alpha"]) {
    const refl = await runProcess("/usr/bin/python3", [join(REPO, "test/daemon/reflection_client.py"), socket, version]);
    assert.equal(refl.code, 0, refl.stderr);
    const names = refl.stdout.split("\n").filter(Boolean);
    assert.ok(names.includes("homestak.nest.v1.NestService"), `reflection ${version} listed: ${names.join(", ")}`);
    assert.ok(names.includes("homestak.nest.v1.AccessService"));
  }

  hsd.proc.kill("SIGTERM");
  const exit = await hsd.exited;
  assert.equal(exit.code, 0, exit.stderr);
  assert.equal(await exists(socket), false, "socket file removed");
  assert.equal(await exists(join(root, "run/ready.json")), false, "ready.json removed");
});

test("a second hsd on the same root is refused with DaemonRunning", async () => {
  const root = await tempRoot();
  const first = started(["run", "--root", root]);
  await first.ready;
  const second = await runProcess(process.execPath, [join(REPO, "dist/daemon/hsd.js"), "run", "--root", root]);
  assert.notEqual(second.code, 0);
  assert.match(second.stderr, /DaemonRunning/);
  const line = second.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((j) => j.code);
  assert.equal(line?.code, "DaemonRunning");
  // The first one is unharmed.
  const st = await runHsctl(["--root", root, "status", "--json"]);
  assert.equal(st.code, 0, st.stderr);
});

test("a stale socket left by a killed process is replaced", async () => {
  const root = await tempRoot();
  const socket = join(root, "run/hsd.sock");
  await runProcess("mkdir", ["-p", "-m", "700", join(root, "run")]);
  // A process that binds the socket path, then dies without cleaning up.
  const holder = spawn(process.execPath, ["-e",
    "require('net').createServer().listen(process.argv[1], () => process.stdout.write('up\\n'))", socket], { stdio: ["ignore", "pipe", "inherit"] });
  cleanups.push(async () => { holder.kill("SIGKILL"); });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("holder never listened")), WAIT_MS);
    holder.stdout!.once("data", () => { clearTimeout(timer); resolve(); });
  });
  const gone = new Promise((r) => holder.once("exit", r));
  holder.kill("SIGKILL");
  await gone;
  assert.ok((await stat(socket)).isSocket(), "stale socket file is there");

  const hsd = started(["run", "--root", root]);
  await hsd.ready;
  const st = await runHsctl(["--root", root, "status", "--json"]);
  assert.equal(st.code, 0, st.stderr);
  assert.match(hsd.stdout(), /replacing stale socket/);
});

test("a broken hsd.yaml stops hsd before it listens, naming the line", async () => {
  const root = await tempRoot();
  await writeFile(join(root, "hsd.yaml"), "level:\n  name: l0\nnest:\n  max_depth: lots\n");
  const res = await runProcess(process.execPath, [join(REPO, "dist/daemon/hsd.js"), "run", "--root", root]);
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /hsd\.yaml:4: nest\.max_depth/);
  assert.doesNotMatch(res.stderr, /\n\s+at /, "no stack trace");
  assert.equal(await exists(join(root, "run/hsd.sock")), false);
});

test("hsctl without a daemon prints one line and a hint, exit 1", async () => {
  const root = await tempRoot();
  const socket = join(root, "nobody.sock");
  const res = await runHsctl(["status", "--socket", socket]);
  assert.equal(res.code, 1);
  const lines = res.stderr.trimEnd().split("\n");
  assert.equal(lines[0], `hsctl: no hsd at ${socket}`);
  assert.match(lines[1] ?? "", /hint: .*hsd run/);
  assert.equal(lines.length, 2);
});

test("hsd --help and version teach and exit 0; a bad command exits 2", async () => {
  const hsd = join(REPO, "dist/daemon/hsd.js");
  const help = await runProcess(process.execPath, [hsd, "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /hsd run \[--root DIR\]/);
  assert.match(help.stdout, /Examples:/);
  const v = await runProcess(process.execPath, [hsd, "version"]);
  assert.match(v.stdout, /^hsd \d+\.\d+\.\d+/);
  const bad = await runProcess(process.execPath, [hsd, "frobnicate"]);
  assert.equal(bad.code, 2);
});

test("hsctl access add/list/remove and version talk to a real hsd", async () => {
  const root = await tempRoot();
  const hsd = started(["run", "--root", root]);
  await hsd.ready;
  const key = join(root, "op.pub");
  await writeFile(key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUior/yFiHwf7dVs9i+UMwnIErNEGBd9Hecguw1gebb op@host\n");
  const add = await runHsctl(["--root", root, "access", "add", "--role", "controller", key, "--json"]);
  assert.equal(add.code, 0, add.stderr);
  const added = JSON.parse(add.stdout);
  assert.equal(added.role, "controller");
  assert.match(added.fingerprint, /^SHA256:/);
  const list = await runHsctl(["--root", root, "access", "list", "--json"]);
  assert.deepEqual(JSON.parse(list.stdout).map((k: { fingerprint: string }) => k.fingerprint), [added.fingerprint]);
  const noRole = await runHsctl(["--root", root, "access", "add", key]);
  assert.equal(noRole.code, 1);
  assert.match(noRole.stderr, /\[InvalidArgument\]/);
  const rm = await runHsctl(["--root", root, "access", "remove", "--fingerprint", added.fingerprint]);
  assert.equal(rm.code, 0, rm.stderr);
  assert.equal(JSON.parse((await runHsctl(["--root", root, "access", "list", "--json"])).stdout).length, 0);
  const v = await runHsctl(["--root", root, "version", "--json"]);
  assert.equal(v.code, 0, v.stderr);
  assert.equal(JSON.parse(v.stdout).daemon, JSON.parse(v.stdout).client);
  const help = await runHsctl(["access", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Examples:/);
});

test("HSD_LOG_PRETTY=1 logs human-readable lines (the built hsd is one bundled file) and still stops cleanly", async () => {
  const root = await tempRoot();
  const hsd = started(["run", "--root", root], { HSD_LOG_PRETTY: "1" });
  await hsd.ready;
  hsd.proc.kill("SIGTERM");
  const x = await hsd.exited;
  assert.equal(x.code, 0, x.stderr);
  assert.match(x.stdout, /hsd ready/);
  // Pretty output, not JSON lines.
  assert.ok(!x.stdout.split("\n").some((l) => l.startsWith("{")), x.stdout.slice(0, 300));
});

test("level 0 generates its demo set after readiness, replacing a half set a killed start left; a sync is served at once, status waits for the checkouts", async () => {
  const root = await tempRoot();
  // What a daemon killed while generating tofu leaves behind: never taken as the repo.
  await mkdir(join(root, "demo", ".tofu.partial-1"), { recursive: true });
  await writeFile(join(root, "demo", ".tofu.partial-1", "half-written"), "x");
  const hsd = started(["run", "--root", root]);
  await hsd.ready;
  const sync = await runHsctl(["--root", root, "sync", "--json"]);
  assert.equal(sync.code, 0, sync.stderr);
  const finished = sync.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
    .find((e) => e.phase === "sync" && e.kind === "finished");
  assert.equal(finished?.repos?.length, 6);
  for (const r of finished.repos) assert.match(r.servedCommit, /^[0-9a-f]{40}$/);
  // The sync may answer from the exports written straight from the build's packs; status reads the checkouts, so it waits for them.
  const st = await runHsctl(["--root", root, "status", "--json"]);
  assert.equal(st.code, 0, st.stderr);
  const served = new Map((finished.repos as { name: string; servedCommit: string }[]).map((r) => [r.name, r.servedCommit]));
  const stRepos = JSON.parse(st.stdout).repos as { name: string; worktreeCommit: string }[];
  assert.equal(stRepos.length, 6);
  for (const r of stRepos) assert.equal(r.worktreeCommit, served.get(r.name), r.name);
  assert.deepEqual((await readdir(join(root, "demo"))).sort(), ["ansible", "bootstrap", "iac-driver", "packer", "site-config", "tofu"]);
  assert.equal(await exists(join(root, "demo", "tofu", "half-written")), false);
  assert.equal(await exists(join(root, "demo", "site-config", "secrets.yaml")), true);
  // Level 0's own site-config files, in homestak's schema; hsd's private file holds none of their values.
  const demoSecrets = await readFile(join(root, "demo", "site-config", "secrets.yaml"), "utf8");
  assert.match(demoSecrets, /^api_tokens:$/m);
  assert.match(demoSecrets, /^ssh_keys:\n {2}operator: "ssh-ed25519 /m);
  assert.equal(await exists(join(root, "demo", "site-config", "site.yaml")), true);
  assert.doesNotMatch(await readFile(join(root, "secrets.yaml"), "utf8"), /vm_root|api_tokens/);
});
