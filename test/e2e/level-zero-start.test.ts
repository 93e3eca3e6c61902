// hsctl's auto-started level 0: when it cannot start, hsctl reports the
// daemon's own error (its code and hint, the log named, exit 1) and never a
// socket it did not try; with the system hsd's 2222 taken and no ssh.port set,
// it listens on a free port and a nest goes through; with no socket to dial,
// level 0 is spawned before hsctl loads its gRPC client; a dead level 0's
// socket file is dialled first, and a new level 0 started when nothing answers;
// hsctl returns from a failed start only once that daemon has exited.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdir, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { e2eTree, hsctl, hsdProcessesUnder, jsonLines } from "../helpers/hsctl.js";
import { holdPort } from "../helpers/hold-port.js";

const { root, l0, env } = await e2eTree("hsd-l0-start-");

async function freshRoot(name: string, yaml: string): Promise<Record<string, string>> {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(join(dir, "hsd.yaml"), yaml, { mode: 0o600 });
  return { HSD_ROOT: dir, HSD_SOCKET: "" };
}

/** stderr lines after hsctl's "starting a level-0 hsd" line. */
function failureLines(stderr: string): string[] {
  return stderr.trimEnd().split("\n").filter((l) => !l.includes("starting a level-0 hsd"));
}

test("a level 0 that cannot bind its SSH port: hsctl prints the daemon's AddressInUse and its log, exit 1", async () => {
  const held = await holdPort();
  try {
    const e = await freshRoot("busy", `ssh:\n  port: ${held.port}\nlog:\n  level: warn\n`);
    const r = await hsctl(["nest", "--depth", "1"], e, 60_000);
    assert.equal(r.code, 1, r.stderr);
    const lines = failureLines(r.stderr);
    assert.match(lines[0] ?? "", /\[AddressInUse\]$/);
    assert.match(lines.at(-1) ?? "", /^ {2}hint: /);
    assert.ok(lines.at(-1)!.includes(join(e.HSD_ROOT!, "hsd.log")), lines.at(-1));
    assert.ok(!r.stderr.includes("/run/hsd/hsd.sock"), "named a socket it did not try");
    assert.deepEqual(await hsdProcessesUnder(e.HSD_ROOT!), []);
  } finally {
    await held.release();
  }
});

test("a level 0 that reports its failure but is slow to exit: hsctl returns only once it has exited", async () => {
  const held = await holdPort();
  try {
    const e = await freshRoot("busy-slow", `ssh:\n  port: ${held.port}\nlog:\n  level: warn\n`);
    const preload = fileURLToPath(new URL("../helpers/slow-exit-preload.cjs", import.meta.url));
    const r = await hsctl(["nest", "--depth", "1"], { ...e, NODE_OPTIONS: `--require ${preload}`, HSD_SLOW_EXIT_MS: "1500" }, 60_000);
    assert.equal(r.code, 1, r.stderr);
    assert.match(failureLines(r.stderr)[0] ?? "", /\[AddressInUse\]$/);
    assert.deepEqual(await hsdProcessesUnder(e.HSD_ROOT!), [], "the failed level 0 was still running when hsctl returned");
  } finally {
    await held.release();
  }
});

test("a level 0 with a broken hsd.yaml: hsctl prints every issue with the daemon's ConfigInvalid, exit 1", async () => {
  const e = await freshRoot("badcfg", "timeouts:\n  connect: soon\nssh:\n  port: twenty-two\nnest:\n  max_dept: 3\n");
  const r = await hsctl(["nest", "--depth", "1"], e, 60_000);
  assert.equal(r.code, 1, r.stderr);
  const lines = failureLines(r.stderr);
  assert.match(lines[0] ?? "", /\[ConfigInvalid\]$/);
  const issueLines = lines.filter((l) => /hsd\.yaml:\d+: /.test(l));
  assert.deepEqual(issueLines.map((l) => /hsd\.yaml:(\d+): ([a-z_.]+):/.exec(l)!.slice(1, 3)), [
    ["2", "timeouts.connect"], ["4", "ssh.port"], ["6", "nest.max_dept"],
  ]);
  assert.ok(lines.at(-1)!.includes(join(e.HSD_ROOT!, "hsd.log")));
});

test("with 2222 taken and no ssh.port in hsd.yaml, level 0 listens on a free port and nest --depth 1 completes", async () => {
  const held = await holdPort(2222);
  try {
    await mkdir(l0, { recursive: true, mode: 0o700 });
    await writeFile(join(l0, "hsd.yaml"), "log:\n  level: warn\n", { mode: 0o600 });
    const r = await hsctl(["nest", "--depth", "1", "--json"], env, 120_000);
    assert.equal(r.code, 0, r.stderr);
    const ready = JSON.parse(await readFile(join(l0, "run/ready.json"), "utf8")) as { sshPort: number };
    assert.ok(ready.sshPort > 0 && ready.sshPort !== 2222, String(ready.sshPort));
    // The child was told the port level 0 actually bound, and status reports it.
    const l1 = parse(await readFile(join(l0, "state/levels/l1/hsd.yaml"), "utf8")) as { parent: { port: number } };
    assert.equal(l1.parent.port, ready.sshPort);
    const st = await hsctl(["status", "--json"], env, 30_000);
    assert.equal(st.code, 0, st.stderr);
    assert.match(JSON.parse(st.stdout).address as string, new RegExp(`:${ready.sshPort}$`));
    assert.ok(jsonLines(r.stdout).some((ev) => ev.level === "l0/l1" && ev.phase === "nest" && ev.kind === "finished"));
  } finally {
    await held.release();
  }
});

test("with no socket to dial, hsctl nest spawns level 0 before it loads its gRPC client, then builds through it", async () => {
  const dir = join(root, "first");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const order = join(root, "load-order.txt");
  const preload = fileURLToPath(new URL("../helpers/load-order-preload.cjs", import.meta.url));
  const e = { HSD_ROOT: join(dir, "l0"), HSD_SOCKET: "", HSD_LOAD_ORDER_FILE: order, NODE_OPTIONS: `--require ${preload}` };
  // The premise: no socket hsctl would dial (its level 0's, or the system hsd's).
  assert.ok(!existsSync("/run/hsd/hsd.sock"), "a system hsd socket exists on this host: hsctl would dial it");
  try {
    const r = await hsctl(["nest", "--depth", "1", "--json"], e, 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(jsonLines(r.stdout).some((ev) => ev.level === "l0/l1" && ev.phase === "nest" && ev.kind === "finished"));
    const lines = (await readFile(order, "utf8")).trim().split("\n");
    const spawned = lines.findIndex((l) => l.startsWith("spawn ") && l.includes("hsd.js run --root"));
    const grpc = lines.indexOf("load http2");
    assert.ok(spawned >= 0, lines.join("\n"));
    assert.ok(grpc >= 0, lines.join("\n"));
    assert.ok(spawned < grpc, `level 0 spawned after the gRPC client loaded:\n${lines.join("\n")}`);
  } finally {
    await hsctl(["destroy"], e, 60_000);
  }
});

test("a killed level 0 leaves its socket file: hsctl nest dials it, finds nothing answering, and starts a new level 0", async () => {
  const dir = join(root, "stale");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const order = join(root, "load-order-stale.txt");
  const preload = fileURLToPath(new URL("../helpers/load-order-preload.cjs", import.meta.url));
  const e = { HSD_ROOT: join(dir, "l0"), HSD_SOCKET: "" };
  try {
    const first = await hsctl(["nest", "--depth", "1", "--json"], e, 120_000);
    assert.equal(first.code, 0, first.stderr);
    const { pid } = JSON.parse(await readFile(join(dir, "l0", "run", "ready.json"), "utf8")) as { pid: number };
    process.kill(pid, "SIGKILL");
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (await hsdProcessesUnder(join(dir, "l0"))).includes(pid)) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!(await hsdProcessesUnder(join(dir, "l0"))).includes(pid), "the killed level 0 is still listed");
    assert.ok(existsSync(join(dir, "l0", "run", "hsd.sock")), "the killed level 0 left no socket file");
    const again = await hsctl(["nest", "--depth", "1", "--json"], { ...e, HSD_LOAD_ORDER_FILE: order, NODE_OPTIONS: `--require ${preload}` }, 120_000);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /no hsd running; starting a level-0 hsd/);
    // A socket file was there: hsctl dialled it (its gRPC client loaded) before starting anything.
    const lines = (await readFile(order, "utf8")).trim().split("\n");
    const spawned = lines.findIndex((l) => l.startsWith("spawn ") && l.includes("hsd.js run --root"));
    assert.ok(spawned > lines.indexOf("load http2") && lines.indexOf("load http2") >= 0, lines.join("\n"));
  } finally {
    await hsctl(["destroy"], e, 60_000);
  }
});
