// hsd as the systemd service `hsd` in a real Debian 12 guest (QEMU, TCG):
// installed the way the PVE install phase does it (bootstrapHsd: bundle with
// node in /opt/hsd, launchers, /etc/homestak/hsd.yaml, daemon/hsd.service),
// then nest --depth 2 on the local provider inside the guest, kill -9, kill
// -STOP (watchdog), systemctl stop, hsctl destroy. Issue 19. Run by
// `npm run test:guests` (root, qemu-system-x86, debootstrap); timings are
// printed as test diagnostics.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootGuest, guestImage, type Guest } from "./qemu-guest.js";
import { generateEd25519KeyPair } from "../../src/ssh/level-keys.js";
import { bootstrapHsd, guestPaths } from "../../src/providers/pve/ssh-bootstrap.js";
import type { GuestSsh } from "../../src/providers/pve/guest-ssh.js";
import { isSystemdServiceVar } from "../../src/util/systemd-env.js";

const ROOT = new URL("../../", import.meta.url).pathname;
const UNIT = await readFile(join(ROOT, "daemon/hsd.service"), "utf8");
const unitSeconds = (key: string) => Number(new RegExp(`^${key}=(\\d+)s$`, "m").exec(UNIT)?.[1] ?? NaN);
const RESTART_S = unitSeconds("RestartSec");
const WATCHDOG_S = unitSeconds("WatchdogSec");
const START_BOUND_S = 120; // hsd's start under TCG on a loaded 2-core host: a bound, not a measurement

const t0 = Date.now();
const timings: Record<string, number> = {};
const tmp = await mkdtemp(join(tmpdir(), "hsd-guest-test-"));
let guest: Guest | undefined;
let ssh: GuestSsh | undefined;
after(async () => {
  ssh?.close();
  await guest?.stop();
  await rm(tmp, { recursive: true, force: true });
  timings.wholeTestS = (Date.now() - t0) / 1000;
  console.log(`# guest timings ${JSON.stringify(timings)}`);
});

/** Runs a shell script in the guest (on stdin: no quoting); fails the test on a non-zero exit. */
async function sh(script: string, timeoutMs = 60_000): Promise<string> {
  assert.ok(ssh, "no guest session: the first test (image, boot, install) failed");
  const r = await ssh.exec("sh -s", { timeoutMs, stdin: `${script}\n` });
  assert.equal(r.code, 0, `guest: ${script}\nexit ${r.code}\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  return r.stdout.trim();
}
/** Waits in the guest (polling every 0.2 s, at most `seconds`) until `cond` holds; returns the seconds it took. */
async function until(what: string, cond: string, seconds: number): Promise<number> {
  assert.ok(ssh, "no guest session: the first test (image, boot, install) failed");
  const r = await ssh.exec("sh -s", {
    timeoutMs: (seconds + 30) * 1000,
    stdin: [
      `cond() { ${cond}; }`,
      `s=$(date +%s%N); end=$((s + ${seconds} * 1000000000))`,
      `while ! cond; do [ "$(date +%s%N)" -lt "$end" ] || exit 9; sleep 0.2; done`,
      `echo $(( ($(date +%s%N) - s) / 1000000 ))`, "",
    ].join("\n"),
  });
  assert.equal(r.code, 0, `guest: ${what} did not happen within ${seconds} s\n${r.stderr}`);
  return Number(r.stdout.trim()) / 1000;
}
/**
 * `hsctl status --json` until it answers (at most `seconds`). A status dials the children
 * whose links are closed, and under TCG on a loaded host a cold depth-2 status can pass
 * hsctl's fixed 10 s deadline (DeadlineExceeded, then retried); any other failure fails.
 */
async function statusOnceAnswered(seconds: number): Promise<unknown> {
  const deadline = Date.now() + seconds * 1000;
  for (let attempt = 1; ; attempt++) {
    assert.ok(ssh, "no guest session");
    const r = await ssh.exec("hsctl status --json", { timeoutMs: 120_000 });
    if (r.code === 0) { timings.statusAttemptsAfterRestart = attempt; return JSON.parse(r.stdout); }
    assert.match(r.stderr, /\[DeadlineExceeded\]/, r.stderr);
    assert.ok(Date.now() < deadline, `hsctl status never answered within ${seconds} s: ${r.stderr}`);
  }
}
const show = async (prop: string) => sh(`systemctl show hsd -p ${prop} --value`);
const readyPid = async (dir = "/var/lib/hsd") => Number(JSON.parse(await sh(`cat ${dir}/run/ready.json`)).pid);
const L1 = "/var/lib/hsd/state/levels/l1";
const L2 = `${L1}/state/levels/l2`;

test("guest: image, boot, install as the install phase does", { timeout: 1_500_000 }, async () => {
  const image = await guestImage();
  timings.imageS = image.seconds;
  timings.imageBuiltInS = image.builtInSeconds;
  const keys = generateEd25519KeyPair("hsd-guest-test");
  guest = await bootGuest({ image, publicKey: keys.public, cpus: 2, memoryMiB: 1536 });
  ssh = await guest.ssh(keys.private, 300_000);
  timings.bootToSshS = (Date.now() - guest.startedAt) / 1000;

  const bundle = join(tmp, "hsd-bundle.tar.gz");
  execFileSync(process.execPath, [join(ROOT, "scripts/bundle.mjs"), "--with-node", "--out", bundle], { stdio: "ignore", timeout: 180_000 });
  // systemd logs each daemon-reload ("Reloading..."): counted before and after the install.
  const reloads = async () => Number(await sh("journalctl -b _PID=1 -o cat | grep -c '^Reloading' || true"));
  const reloadsBefore = await reloads();
  const t = Date.now();
  const ready = await bootstrapHsd(ssh, {
    bundle: await readFile(bundle), paths: guestPaths(""), unitText: UNIT,
    configYaml: "# level 0 of the guest test: every default\n",
    readyTimeoutMs: START_BOUND_S * 1000, commandTimeoutMs: 120_000, signal: AbortSignal.timeout(600_000), log: () => {},
  });
  timings.installS = (Date.now() - t) / 1000;
  assert.equal(Number(await show("MainPID")), ready.pid);
  assert.equal(await show("NotifyAccess"), "main");
  // No reload on a fresh VM (systemd loads the new unit when first referenced; enable --no-reload):
  // the unit is still enabled for the next boot, and systemd runs the unit file on disk, not one it would have to reload.
  assert.equal(await reloads(), reloadsBefore, "a fresh VM's install ran systemctl daemon-reload");
  assert.equal(await sh("systemctl is-enabled hsd"), "enabled");
  assert.equal(await show("NeedDaemonReload"), "no");
  assert.equal(await show("UnitFileState"), "enabled");
});

test("guest: after nest --depth 2 MainPID is level 0 and no child notified; children run in their own scopes", { timeout: 900_000 }, async () => {
  const t = Date.now();
  await sh("hsctl nest --depth 2 --json > /root/nest.json", 840_000);
  timings.nestDepth2S = (Date.now() - t) / 1000;
  const l0 = await readyPid();
  assert.equal(Number(await show("MainPID")), l0);
  assert.equal(await sh("journalctl -u hsd --no-pager | grep -c 'not our child' || true"), "0");
  assert.equal(await sh("journalctl -u hsd --no-pager | grep -c 'reception only permitted' || true"), "0");
  for (const dir of [L1, L2]) {
    const pid = await readyPid(dir);
    const cgroup = await sh(`cat /proc/${pid}/cgroup`);
    assert.match(cgroup, /\/hsd-levels\.slice\/hsd-level-[^/]+\.scope$/m, `${dir}: ${cgroup}`);
    const env = new Map((await sh(`tr '\\0' '\\n' < /proc/${pid}/environ`)).split("\n").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
    assert.deepEqual([...env.keys()].filter((k) => isSystemdServiceVar(k) && k !== "INVOCATION_ID"), [], dir);
    // systemd-run gives the scope's own invocation ID to what it starts; never the service's.
    const scope = /\/(hsd-level-[^/]+\.scope)$/m.exec(cgroup)![1]!;
    assert.equal(env.get("INVOCATION_ID"), await sh(`systemctl show ${scope} -p InvocationID --value`), dir);
    assert.notEqual(env.get("INVOCATION_ID"), await show("InvocationID"), dir);
  }
});

test("guest: kill -9 of level 0: restarted, NRestarts=1, the children keep running, the next nest resumes them", { timeout: 900_000 }, async () => {
  const l0 = await readyPid();
  const children = [await readyPid(L1), await readyPid(L2)];
  await sh(`kill -9 ${l0}`);
  const s = await until("a restarted, ready level 0",
    `p=$(systemctl show hsd -p MainPID --value); [ "$p" != 0 ] && [ "$p" != ${l0} ] && [ "$(systemctl show hsd -p ActiveState --value)" = active ] && [ -s /var/lib/hsd/run/ready.json ]`,
    RESTART_S + START_BOUND_S);
  timings.restartAfterKill9S = s;
  assert.equal(await show("NRestarts"), "1");
  assert.equal(Number(await show("MainPID")), await readyPid());
  for (const pid of children) {
    await sh(`kill -0 ${pid}`);
    // Still a usable system under them: the service's stop took nothing of their mount namespace (no PrivateTmp).
    await sh(`nsenter -t ${pid} -m sh -c 't=$(mktemp) && rm "$t"'`);
  }
  // The restarted level 0 knows its children from its journal: the same nest resumes them, it rebuilds nothing.
  const t = Date.now();
  await sh("hsctl nest --depth 2 --json > /root/nest-again.json", 840_000);
  timings.nestResumeS = (Date.now() - t) / 1000;
  const events = (await sh("cat /root/nest-again.json")).split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { level: string; phase: string; kind: string });
  for (const level of ["l0/l1", "l0/l1/l2"]) {
    assert.ok(events.some((e) => e.level === level && e.phase === "install" && e.kind === "skipped"), `${level} was reinstalled`);
  }
  assert.deepEqual([await readyPid(L1), await readyPid(L2)], children);
  const st = await statusOnceAnswered(START_BOUND_S) as { children: { name: string; state: string; children: { name: string; state: string }[] }[] };
  assert.deepEqual(st.children.map((c) => [c.name, c.state]), [["l1", "ready"]]);
  assert.deepEqual(st.children[0]!.children.map((c) => [c.name, c.state]), [["l2", "ready"]]);
});

test("guest: kill -STOP of level 0: the watchdog restarts it", { timeout: 600_000 }, async () => {
  const l0 = await readyPid();
  await sh(`kill -STOP ${l0}`);
  const s = await until("a watchdog restart",
    `[ "$(systemctl show hsd -p NRestarts --value)" = 2 ] && [ "$(systemctl show hsd -p ActiveState --value)" = active ]`,
    WATCHDOG_S + RESTART_S + START_BOUND_S);
  timings.watchdogRestartAfterStopS = s;
  assert.notEqual(Number(await show("MainPID")), l0);
  assert.notEqual(await sh("journalctl -u hsd --no-pager | grep -c 'Watchdog timeout' || true"), "0");
});

test("guest: systemctl stop: SIGTERM, graceful shutdown, exit 0, socket removed; children stay; destroy removes them", { timeout: 600_000 }, async () => {
  const l0 = await readyPid();
  const children = [await readyPid(L1), await readyPid(L2)];
  const s = Number(await sh("s=$(date +%s%N); systemctl stop hsd; echo $(( ($(date +%s%N) - s) / 1000000 ))", 60_000)) / 1000;
  timings.systemctlStopS = s;
  assert.equal(await show("ExecMainStatus"), "0");
  assert.equal(await show("Result"), "success");
  assert.equal(await sh("test -e /run/hsd/hsd.sock && echo present || echo gone"), "gone");
  // The graceful path ran in level 0 (it logs both ends of it), not a kill.
  const log = await sh(`journalctl _PID=${l0} --no-pager -o cat | grep -cE '"msg":"hsd (stopping|stopped)"'`);
  assert.equal(log, "2");
  for (const pid of children) await sh(`kill -0 ${pid}`);

  await sh("systemctl start hsd", START_BOUND_S * 1000);
  await sh("hsctl destroy --json > /root/destroy.json", 300_000);
  for (const pid of children) assert.equal(await sh(`kill -0 ${pid} 2>/dev/null && echo alive || echo gone`), "gone");
  assert.equal(await sh("systemctl list-units --all --no-legend 'hsd-level-*' | wc -l"), "0");
});
