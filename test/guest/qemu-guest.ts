// Real Debian 12 guests for tests that need a real kernel and systemd as PID 1
// (issue 19's service test; issue 18's real-guest simulator reuses it).
//   guestImage(): builds or reuses the image from scripts/guest-image.sh (cached by input hash).
//   bootGuest({ image, publicKey }): QEMU under TCG (KVM hangs on these machines), root disk
//     with snapshot=on (the cached image is never written), user-mode networking with sshd
//     forwarded to a port the OS picks on 127.0.0.1 (read back over QMP), the key passed on
//     the kernel cmdline. Resolves once QEMU runs; guest.ssh() waits for sshd and logs in.
// Test-only: imported by test/guest/ (and the PVE simulator's real-guest mode).

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestSsh } from "../../src/providers/pve/guest-ssh.js";

const ROOT = new URL("../../", import.meta.url).pathname;

export interface GuestImage {
  readonly dir: string;
  readonly kernel: string;
  readonly initrd: string;
  readonly rootfs: string;
  /** Seconds this call took: a cold build, or ~0 from the cache. */
  readonly seconds: number;
  /** Seconds the cached image took to build when it was built (its manifest). */
  readonly builtInSeconds: number;
}

/** Runs scripts/guest-image.sh (root, debootstrap): the image dir for these packages, built at most once. */
export function guestImage(o: { packages?: readonly string[]; cacheDir?: string; timeoutMs?: number } = {}): Promise<GuestImage> {
  const args = [join(ROOT, "scripts/guest-image.sh")];
  if (o.packages?.length) args.push("--packages", o.packages.join(" "));
  if (o.cacheDir) args.push("--cache", o.cacheDir);
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    execFile("bash", args, { timeout: o.timeoutMs ?? 900_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) { reject(new Error(`guest-image.sh failed: ${err.message}\n${stderr.slice(-2000)}`)); return; }
      const dir = stdout.trim().split("\n").at(-1)!;
      void readFile(join(dir, "manifest"), "utf8").then((m) => resolve({
        dir, kernel: join(dir, "vmlinuz"), initrd: join(dir, "initrd.img"), rootfs: join(dir, "rootfs.img"),
        seconds: (Date.now() - t0) / 1000, builtInSeconds: Number(/^build_seconds=(\d+)/m.exec(m)?.[1] ?? NaN),
      }), reject);
    });
  });
}

export interface BootOptions {
  readonly image: GuestImage;
  /** OpenSSH public key line authorized for root. */
  readonly publicKey: string;
  readonly cpus?: number;
  readonly memoryMiB?: number;
  /** Extra kernel cmdline words. */
  readonly append?: readonly string[];
  /** Bound on QEMU starting and answering QMP. */
  readonly startTimeoutMs?: number;
}

export interface Guest {
  /** 127.0.0.1:<sshPort> reaches the guest's sshd (port 22). */
  readonly sshPort: number;
  readonly startedAt: number;
  /** Waits (at most waitMs) for sshd to let root in with privateKey. */
  ssh(privateKey: string, waitMs: number): Promise<GuestSsh>;
  /** The serial console so far (kernel and systemd messages), for failure reports. */
  console(): Promise<string>;
  /** Powers the guest off (SIGTERM to QEMU, SIGKILL after 10 s) and removes its temp dir. */
  stop(): Promise<void>;
}

export async function bootGuest(o: BootOptions): Promise<Guest> {
  const dir = await mkdtemp(join(tmpdir(), "hsd-guest-"));
  const qmpPath = join(dir, "qmp.sock");
  const consolePath = join(dir, "console.log");
  const cmdline = [
    "root=/dev/vda", "rw", "console=ttyS0", "quiet", "panic=-1",
    `hsd.ssh_key=${Buffer.from(o.publicKey.trim()).toString("base64")}`, ...(o.append ?? []),
  ].join(" ");
  const startedAt = Date.now();
  const qemu = spawn("qemu-system-x86_64", [
    "-accel", "tcg,thread=multi", "-smp", String(o.cpus ?? 2), "-m", String(o.memoryMiB ?? 1024),
    "-nodefaults", "-display", "none", "-no-reboot",
    "-kernel", o.image.kernel, "-initrd", o.image.initrd, "-append", cmdline,
    "-drive", `file=${o.image.rootfs},format=raw,if=virtio,snapshot=on`,
    // hostfwd port 0: the OS picks a free loopback port; QMP tells us which.
    "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:0-:22", "-device", "virtio-net-pci,netdev=n0",
    "-serial", `file:${consolePath}`, "-qmp", `unix:${qmpPath},server=on,wait=off`,
  ], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, TMPDIR: dir } });
  let stderr = "";
  qemu.stderr!.setEncoding("utf8").on("data", (c: string) => { stderr += c; });
  const exited = new Promise<void>((r) => qemu.on("close", () => r()));
  const stop = async () => {
    if (qemu.exitCode === null && qemu.signalCode === null) {
      qemu.kill("SIGTERM");
      const t = setTimeout(() => qemu.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(t);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const sshPort = await forwardedSshPort(qemu, qmpPath, o.startTimeoutMs ?? 30_000, () => stderr);
    return {
      sshPort, startedAt, stop,
      console: () => readFile(consolePath, "utf8").catch(() => ""),
      ssh: (privateKey, waitMs) => GuestSsh.waitFor({
        host: "127.0.0.1", port: sshPort, privateKey, waitMs, connectTimeoutMs: 20_000, signal: AbortSignal.timeout(waitMs + 30_000),
        retryInitialMs: 500, retryMaxMs: 2000,
      }),
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Asks QEMU's QMP which host port its hostfwd got ("info usernet"). */
async function forwardedSshPort(qemu: ChildProcess, qmpPath: string, timeoutMs: number, stderr: () => string): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(qmpPath)) {
    if (qemu.exitCode !== null || qemu.signalCode !== null) throw new Error(`qemu exited: ${stderr()}`);
    if (Date.now() > deadline) throw new Error(`qemu opened no QMP socket within ${timeoutMs} ms: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  // The socket file appears at bind(), a moment before QEMU listens: ECONNREFUSED until then.
  for (;;) {
    try { return await usernetSshPort(qmpPath, deadline); } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ECONNREFUSED" || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function usernetSshPort(qmpPath: string, deadline: number): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => {
    const s = connect(qmpPath);
    const timer = setTimeout(() => { s.destroy(); reject(new Error("QMP did not answer in time")); }, Math.max(1000, deadline - Date.now()));
    let buf = "";
    let step = 0;
    s.setEncoding("utf8");
    s.on("error", (e) => { clearTimeout(timer); reject(e); });
    s.on("data", (c: string) => {
      buf += c;
      for (let nl; (nl = buf.indexOf("\n")) >= 0;) {
        const msg = JSON.parse(buf.slice(0, nl)) as { QMP?: unknown; return?: unknown; error?: { desc: string } };
        buf = buf.slice(nl + 1);
        if (msg.error) { clearTimeout(timer); s.destroy(); reject(new Error(`QMP: ${msg.error.desc}`)); return; }
        if (step === 0 && msg.QMP) { step = 1; s.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`); }
        else if (step === 1 && msg.return !== undefined) {
          step = 2;
          s.write(`${JSON.stringify({ execute: "human-monitor-command", arguments: { "command-line": "info usernet" } })}\n`);
        } else if (step === 2 && typeof msg.return === "string") { clearTimeout(timer); s.end(); resolve(msg.return); }
      }
    });
  });
  const m = /HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+22\b/.exec(text);
  if (!m) throw new Error(`no ssh forward in QEMU's usernet table: ${text}`);
  return Number(m[1]);
}
