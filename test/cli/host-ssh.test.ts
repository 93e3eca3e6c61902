// hsctl --host ssh:// against a real hsd: real OpenSSH tools write the
// operator's known_hosts (ssh-keyscan, hashed by ssh-keygen -H) and hold its
// key (ssh-agent + ssh-add). An unknown host key, a changed host key and a
// key that is not a controller are each a typed error, and no request
// reaches the daemon: the `access add` each attempt makes never lands.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, mkdir, readFile, rm, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startHsd, runHsctl, type HsdProcess, type ReadyLine } from "../daemon/daemon-process.js";
import { connectHost } from "../../src/cli/connect.js";
import { errorCode } from "../../src/domain/errors.js";

let dir: string;
let hsd: HsdProcess;
let ready: ReadyLine;
let agent: { pid: number; sock: string } | undefined;
let url: string;
const home = () => join(dir, "home");
const knownHosts = () => join(home(), ".ssh", "known_hosts");

function keygen(path: string): string {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "operator@test", "-f", path]);
  return path;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hsd-host-"));
  await mkdir(join(home(), ".ssh"), { recursive: true, mode: 0o700 });
  hsd = startHsd(["run", "--root", join(dir, "l0")], { HSD_FAULTS: "" });
  ready = await hsd.ready;
  url = `ssh://root@127.0.0.1:${ready.sshPort}`;
  // A real ssh-agent holding the operator's key; ~/.ssh has no id_ed25519, so the agent is the only source.
  const sock = join(dir, "agent.sock");
  const out = execFileSync("ssh-agent", ["-a", sock, "-s"], { encoding: "utf8" });
  agent = { pid: Number(/SSH_AGENT_PID=(\d+)/.exec(out)![1]), sock };
  keygen(join(dir, "operator"));
  execFileSync("ssh-add", ["-q", join(dir, "operator")], { env: { ...process.env, SSH_AUTH_SOCK: sock } });
});

after(async () => {
  if (agent) { try { process.kill(agent.pid, "SIGTERM"); } catch { /* gone */ } }
  await hsd?.kill();
  await rm(dir, { recursive: true, force: true });
});

const local = { HSD_SOCKET: "" };
const remoteEnv = () => ({ HOME: home(), SSH_AUTH_SOCK: agent!.sock, HSD_SOCKET: "", HSD_ROOT: join(dir, "nowhere") });

async function listedKeys(): Promise<string[]> {
  const r = await runHsctl(["--socket", ready.socket, "access", "list", "--json"], local);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { fingerprint: string }[]).map((k) => k.fingerprint);
}

/** Tries to authorize a fresh key through --host; returns the run and that key's fingerprint. */
async function tryAddKey(extra: string[] = []) {
  const probe = keygen(join(dir, `probe-${Math.random().toString(36).slice(2)}`));
  const fp = execFileSync("ssh-keygen", ["-l", "-f", `${probe}.pub`], { encoding: "utf8" }).split(" ")[1]!;
  const r = await runHsctl(["--host", url, ...extra, "access", "add", "--role", "reader", `${probe}.pub`], remoteEnv());
  return { r, fp };
}

function scan(): string {
  return execFileSync("ssh-keyscan", ["-p", String(ready.sshPort), "127.0.0.1"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
}

test("unknown host key: HostKeyUnknown with the fingerprint and how to accept it; nothing sent", async () => {
  await writeFile(knownHosts(), "");
  const { r, fp } = await tryAddKey();
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /\[HostKeyUnknown\]/);
  assert.ok(r.stderr.includes(ready.hostKeyFingerprint), r.stderr);
  assert.match(r.stderr, /ssh-keyscan -p \d+ 127\.0\.0\.1 >> /);
  assert.ok(!(await listedKeys()).includes(fp));
  await assert.rejects(connectHost({ host: url, env: remoteEnv(), cwd: dir }), (e) => errorCode(e) === "HostKeyUnknown");
});

test("changed host key: HostKeyMismatch naming both fingerprints; nothing sent", async () => {
  // Another host's key filed under this host:port, as after a rebuild.
  const other = keygen(join(dir, "other-host"));
  const pub = (await readFile(`${other}.pub`, "utf8")).split(" ").slice(0, 2).join(" ");
  await writeFile(knownHosts(), `[127.0.0.1]:${ready.sshPort} ${pub}\n`);
  const { r, fp } = await tryAddKey();
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /\[HostKeyMismatch\]/);
  assert.ok(r.stderr.includes(ready.hostKeyFingerprint), r.stderr);
  assert.match(r.stderr, /ssh-keygen -R '\[127\.0\.0\.1\]:\d+'/);
  assert.ok(!(await listedKeys()).includes(fp));
  await assert.rejects(connectHost({ host: url, env: remoteEnv(), cwd: dir }), (e) => errorCode(e) === "HostKeyMismatch");
});

test("a known host, hashed by ssh-keygen -H; a key that is only a reader: NotController; nothing sent", async () => {
  await writeFile(knownHosts(), scan());
  execFileSync("ssh-keygen", ["-q", "-H", "-f", knownHosts()]);
  assert.match(await readFile(knownHosts(), "utf8"), /^\|1\|/);
  const add = await runHsctl(["--socket", ready.socket, "access", "add", "--role", "reader", join(dir, "operator.pub")], local);
  assert.equal(add.code, 0, add.stderr);
  const { r, fp } = await tryAddKey();
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /\[NotController\]/);
  assert.ok(!(await listedKeys()).includes(fp));
  await assert.rejects(connectHost({ host: url, env: remoteEnv(), cwd: dir }), (e) => errorCode(e) === "NotController");
});

test("a controller key from the agent, then from -i: every command rides the tunnel", async () => {
  const add = await runHsctl(["--socket", ready.socket, "access", "add", "--role", "controller", join(dir, "operator.pub")], local);
  assert.equal(add.code, 0, add.stderr);
  const st = await runHsctl(["--host", url, "status", "--json"], remoteEnv());
  assert.equal(st.code, 0, st.stderr);
  assert.equal(JSON.parse(st.stdout).name, "l0");
  const { r, fp } = await tryAddKey();
  assert.equal(r.code, 0, r.stderr);
  assert.ok((await listedKeys()).includes(fp));

  // -i: only that key, no agent. HSD_HOST is the environment form of --host.
  await copyFile(join(dir, "operator"), join(dir, "op-copy"));
  const viaEnv = await runHsctl(["-i", join(dir, "op-copy"), "logs", "--since", "1h", "--json"], { ...remoteEnv(), SSH_AUTH_SOCK: "", HSD_HOST: url });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.ok(viaEnv.stdout.split("\n").some((l) => l.includes("\"msg\":\"hsd ready\"")), viaEnv.stdout.slice(0, 500));

  // A key the level does not know at all is refused by SSH itself.
  const stranger = keygen(join(dir, "stranger"));
  const denied = await runHsctl(["--host", url, "-i", stranger, "status"], { ...remoteEnv(), SSH_AUTH_SOCK: "" });
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /\[AccessDenied\]/);
});

