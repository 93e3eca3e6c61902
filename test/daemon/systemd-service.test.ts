// hsd as systemd's service process, outside a guest: a python probe plays the
// notify socket (it reports each message's sender PID as systemd would see it),
// the real hsd gets the whole service environment, and a real child level is
// nested under it. The same behaviour under a real systemd: test/guest/.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO, startHsd, WAIT_MS, type HsdProcess } from "./daemon-process.js";
import { hsctl, hsdProcessesUnder } from "../helpers/hsctl.js";
import { isSystemdServiceVar, serviceManagerFrom, withoutSystemdEnv } from "../../src/util/systemd-env.js";
import { localChildEnv } from "../../src/providers/local/local-provider.js";
import { CHILD_SLICE, childScopeName, systemdScopePrefix } from "../../src/providers/local/child-scope.js";

const roots: string[] = [];
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  for (const r of roots) {
    for (const pid of await hsdProcessesUnder(r)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
    await rm(r, { recursive: true, force: true });
  }
});
async function tempRoot(): Promise<string> {
  const r = await mkdtemp(join(tmpdir(), "hsd-sd-"));
  roots.push(r);
  return r;
}

interface Note { pid: number | null; msg: string }
/** The notify socket: every message with its sender PID (SCM_CREDENTIALS). */
class NotifyProbe {
  readonly notes: Note[] = [];
  private waiters: (() => void)[] = [];
  private constructor(private readonly p: ChildProcessWithoutNullStreams, readonly path: string) {}
  static async start(path: string): Promise<NotifyProbe> {
    const p = spawn("/usr/bin/python3", [join(REPO, "test/daemon/notify_probe.py"), path]);
    const probe = new NotifyProbe(p, path);
    cleanups.push(async () => { p.stdin.end(); if (p.exitCode === null) p.kill(); });
    let buf = "";
    await new Promise<void>((resolve, reject) => {
      p.on("exit", (code) => reject(new Error(`notify probe exited ${code}`)));
      p.stdout.setEncoding("utf8").on("data", (c: string) => {
        buf += c;
        for (let nl; (nl = buf.indexOf("\n")) >= 0;) {
          const v = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (v.bound) resolve();
          else { probe.notes.push(v as Note); for (const w of probe.waiters.splice(0)) w(); }
        }
      });
    });
    return probe;
  }
  /** Resolves once `pred` holds for the notes so far; rejects after WAIT_MS. */
  async until(what: string, pred: (n: Note[]) => boolean): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!pred(this.notes)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`notify: no ${what} within ${WAIT_MS} ms: ${JSON.stringify(this.notes)}`);
      await new Promise<void>((r) => { const t = setTimeout(r, left); this.waiters.push(() => { clearTimeout(t); r(); }); });
    }
  }
}

/** Everything systemd puts in a service's environment (systemd.exec(5)), watchdog set to ping every 100 ms. */
function serviceEnv(notifySocket: string): Record<string, string> {
  return {
    NOTIFY_SOCKET: notifySocket, WATCHDOG_USEC: "200000", INVOCATION_ID: "0123456789abcdef0123456789abcdef",
    JOURNAL_STREAM: "8:12345", LISTEN_FDS: "0", LISTEN_PID: "1", LISTEN_FDNAMES: "", MANAGERPID: "1", SYSTEMD_EXEC_PID: "1",
    RUNTIME_DIRECTORY: "/run/hsd", STATE_DIRECTORY: "/var/lib/hsd", CONFIGURATION_DIRECTORY: "/etc/homestak",
    MONITOR_SERVICE_RESULT: "success", HSD_LOG_PRETTY: "",
  };
}

async function serviceHsd(root: string, extra: Record<string, string> = {}): Promise<{ hsd: HsdProcess; probe: NotifyProbe }> {
  const probe = await NotifyProbe.start(join(root, "notify.sock"));
  const hsd = startHsd(["run", "--root", join(root, "l0")], { ...serviceEnv(probe.path), ...extra });
  cleanups.push(() => hsd.kill());
  return { hsd, probe };
}

test("the systemd service variables are recognised, and a child env keeps everything else", () => {
  const env = { ...serviceEnv("/run/systemd/notify"), PATH: "/usr/bin", HOME: "/root", LANG: "C.UTF-8", HSD_FAULTS: "x" };
  const child = localChildEnv(env, { WATCHDOG_PID: "7", EXTRA: "1" }, ["l0", "l1"]);
  assert.deepEqual(Object.keys(child).filter(isSystemdServiceVar), []);
  assert.deepEqual({ PATH: child.PATH, HOME: child.HOME, LANG: child.LANG, HSD_FAULTS: child.HSD_FAULTS, EXTRA: child.EXTRA },
    { PATH: "/usr/bin", HOME: "/root", LANG: "C.UTF-8", HSD_FAULTS: "x", EXTRA: "1" });
  assert.equal(child.HSD_LEVEL_PATH, "l0/l1");
  assert.deepEqual(withoutSystemdEnv({ NOTIFY_SOCKET: "/x", TRIGGER_UNIT: "a.path", LISTEN_FDS: "1" }), {});
});

test("a child level's scope: a valid unit name per spawn, in the levels' slice, the command after --", () => {
  const a = childScopeName(["l0", "l1"]);
  assert.match(a, /^hsd-level-l0-l1-[0-9a-f]{8}\.scope$/);
  assert.notEqual(childScopeName(["l0", "l1"]), a);
  assert.match(childScopeName(["l0", "we!rd name"]), /^hsd-level-l0-we_rd_name-[0-9a-f]{8}\.scope$/);
  const argv = systemdScopePrefix(["l0", "l1"]);
  assert.deepEqual(argv.slice(0, 2), ["systemd-run", "--scope"]);
  assert.ok(argv.includes(`--slice=${CHILD_SLICE}`));
  assert.equal(argv.at(-1), "--");
});

test("the watchdog applies when WATCHDOG_PID is unset or ours, at half of WATCHDOG_USEC", () => {
  assert.equal(serviceManagerFrom({ WATCHDOG_USEC: "30000000" }, 42, true).watchdogPingMs, 15_000);
  assert.equal(serviceManagerFrom({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "42" }, 42, true).watchdogPingMs, 15_000);
  assert.equal(serviceManagerFrom({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "41" }, 42, true).watchdogPingMs, undefined);
  assert.equal(serviceManagerFrom({ WATCHDOG_USEC: "nonsense" }, 42, true).watchdogPingMs, undefined);
  assert.equal(serviceManagerFrom({}, 42, false).booted, false);
});

test("as a service, hsd notifies READY=1 and watchdog pings as its own PID; SIGTERM: STOPPING=1, exit 0, socket removed", async () => {
  const root = await tempRoot();
  const { hsd, probe } = await serviceHsd(root);
  const ready = await hsd.ready;
  await probe.until("READY=1", (n) => n.some((x) => x.msg.includes("READY=1")));
  await probe.until("two watchdog pings", (n) => n.filter((x) => x.msg.includes("WATCHDOG=1")).length >= 2);
  const readyNote = probe.notes.find((x) => x.msg.includes("READY=1"))!;
  assert.match(readyNote.msg, new RegExp(`(^|\\n)MAINPID=${ready.pid}(\\n|$)`));
  // Every message is hsd's own: systemd with NotifyAccess=main accepts only these.
  assert.deepEqual([...new Set(probe.notes.map((x) => x.pid))], [ready.pid]);
  hsd.proc.kill("SIGTERM");
  const x = await hsd.exited;
  assert.equal(x.code, 0, x.stderr);
  assert.ok(probe.notes.some((n) => n.msg.includes("STOPPING=1")));
  assert.equal(existsSync(join(root, "l0", "run", "hsd.sock")), false);
});

test("a watchdog meant for another PID (WATCHDOG_PID) gets no pings from hsd", async () => {
  const root = await tempRoot();
  const { hsd, probe } = await serviceHsd(root, { WATCHDOG_PID: "1" });
  await hsd.ready;
  await probe.until("READY=1", (n) => n.some((x) => x.msg.includes("READY=1")));
  // Long enough for three pings at the 100 ms interval, had hsd taken the watchdog; then a marker that follows any.
  await new Promise((r) => setTimeout(r, 400));
  hsd.proc.kill("SIGTERM");
  assert.equal((await hsd.exited).code, 0);
  await probe.until("STOPPING=1", (n) => n.some((x) => x.msg.includes("STOPPING=1")));
  assert.deepEqual(probe.notes.filter((x) => x.msg.includes("WATCHDOG=1")), []);
});

test("a child level started by a service hsd gets no systemd variable and never notifies", { timeout: 180_000 }, async () => {
  const root = await tempRoot();
  const { hsd, probe } = await serviceHsd(root);
  const ready = await hsd.ready;
  const env = { HSD_ROOT: join(root, "l0") };
  cleanups.push(async () => { await hsctl(["destroy", "--json"], env, 60_000); });
  const r = await hsctl(["nest", "--depth", "2", "--isolation", "process", "--json"], env, 170_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${r.stdout.slice(-2000)}`);
  const levels = [join(root, "l0", "state", "levels", "l1"), join(root, "l0", "state", "levels", "l1", "state", "levels", "l2")];
  for (const dir of levels) {
    const { pid } = JSON.parse(await readFile(join(dir, "run", "ready.json"), "utf8")) as { pid: number };
    const environ = (await readFile(`/proc/${pid}/environ`, "utf8")).split("\0").filter(Boolean).map((kv) => kv.slice(0, kv.indexOf("=")));
    assert.deepEqual(environ.filter(isSystemdServiceVar), [], dir);
    assert.ok(environ.includes("HSD_LEVEL_PATH"), "the child's environment was read");
  }
  await probe.until("a watchdog ping after the nest", (n) => n.filter((x) => x.msg.includes("WATCHDOG=1")).length >= 2);
  assert.deepEqual([...new Set(probe.notes.map((x) => x.pid))], [ready.pid]);
  assert.equal(probe.notes.filter((x) => x.msg.includes("READY=1")).length, 1);
});
