// The simulator's node filesystem (test/pve-sim/sim-node-fs.ts) read through a guest
// agent, as it reads a real-guest node's /var/lib/vz: the real qemu-guest-agent (qemu-ga)
// listening on a host socket, spoken to by the simulator's own QGA channel (sim-qga.ts).
// Every answer must equal the host backend's for the same files: exists, size, contents
// past one read chunk, the listing, and the errors for what is not there.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QgaChannel } from "../pve-sim/sim-qga.js";
import { SimNodeFs, agentBackend, hostBackend } from "../pve-sim/sim-node-fs.js";

let dir = "";
let ga: ChildProcess | undefined;
let channel: QgaChannel;
const SNIPPET = "#cloud-config\nhostname: l2\n";
const big = randomBytes((2 << 20) + 12_345); // more than two of the backend's 1 MiB reads

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hsd-node-fs-"));
  const sock = join(dir, "qga.sock");
  // qemu-ga writes its state file at start-up and exits (status 0) if the directory is missing.
  await mkdir(join(dir, "state"));
  ga = spawn("/usr/sbin/qemu-ga", ["-m", "unix-listen", "-p", sock, "-t", join(dir, "state"), "-f", join(dir, "qga.pid")], { stdio: "ignore" });
  channel = new QgaChannel(sock, 100);
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (ga.exitCode !== null) throw new Error(`qemu-ga exited ${ga.exitCode}`);
    if (existsSync(sock) && await channel.call("guest-ping", undefined, 2000).then(() => true, () => false)) break;
    if (Date.now() > deadline) throw new Error("qemu-ga did not answer within 20 s");
    await new Promise((r) => setTimeout(r, 50)); // waiting for the agent's socket to appear
  }
  await mkdir(join(dir, "vz/snippets"), { recursive: true });
  await writeFile(join(dir, "vz/snippets/hsd-l2.yaml"), SNIPPET);
  await writeFile(join(dir, "vz/snippets/big.img"), big);
  await writeFile(join(dir, "vz/snippets/empty"), "");
  await mkdir(join(dir, "vz/snippets/subdir"));
});

after(async () => {
  channel?.close();
  if (ga && ga.exitCode === null && ga.signalCode === null) {
    const gone = new Promise((r) => ga!.once("close", r));
    ga.kill("SIGTERM");
    await gone;
  }
  await rm(dir, { recursive: true, force: true });
});

const agent = () => agentBackend((cmd, args) => channel.call(cmd, args));

test("through the agent: exists, size and contents equal the host's, across several read chunks and for an empty file", async () => {
  const a = agent();
  const h = hostBackend("");
  for (const f of ["vz/snippets/hsd-l2.yaml", "vz/snippets/big.img", "vz/snippets/empty"]) {
    const p = join(dir, f);
    assert.equal(await a.exists(p), true, f);
    assert.equal(await a.size(p), await h.size(p), f);
    assert.ok((await a.readFile(p)).equals(await h.readFile(p)), f);
  }
  assert.ok((await a.readFile(join(dir, "vz/snippets/big.img"))).equals(big));
});

test("through the agent: a missing file does not exist, its size and contents fail; a missing directory lists nothing", async () => {
  const a = agent();
  const missing = join(dir, "vz/snippets/nope.yaml");
  assert.equal(await a.exists(missing), false);
  await assert.rejects(a.size(missing));
  await assert.rejects(a.readFile(missing));
  assert.deepEqual(await a.list(join(dir, "vz/nowhere")), []);
});

test("through the agent: the listing is the directory's regular files with the host's sizes and ctimes", async () => {
  const snippets = join(dir, "vz/snippets");
  const byName = <T extends { name: string }>(xs: T[]) => [...xs].sort((x, y) => x.name.localeCompare(y.name));
  const got = byName(await agent().list(snippets));
  const want = byName(await hostBackend("").list(snippets));
  assert.deepEqual(got.map((e) => [e.name, e.size]), [["big.img", big.length], ["empty", 0], ["hsd-l2.yaml", SNIPPET.length]]);
  assert.deepEqual(got.map((e) => [e.name, e.size]), want.map((e) => [e.name, e.size]));
  // find's %C@ has sub-second digits; both are the same inode's ctime to the millisecond (rounding aside).
  for (const [i, e] of got.entries()) assert.ok(Math.abs(e.ctimeMs - want[i]!.ctimeMs) <= 1, e.name);
});

test("a VM node: its files through the attached agent, none while its VM is down; level 0 reads the host's", async () => {
  const node = new SimNodeFs(true);
  const p = join(dir, "vz/snippets/hsd-l2.yaml");
  await assert.rejects(node.exists(p));
  node.attachAgent((cmd, args) => channel.call(cmd, args));
  assert.equal((await node.readFile(p)).toString(), SNIPPET);
  node.detach();
  await assert.rejects(node.readFile(p));
  const level0 = new SimNodeFs(false);
  level0.detach();
  assert.equal(await level0.size(p), SNIPPET.length);
});
