// A real OpenSSH sshd on 127.0.0.1 standing in for a booted VM's sshd.
// Test-only. Keys are generated per instance; stopped and removed by close().
// Sessions get PATH with the instance's bin/ first (sshd SetEnv), so fake
// cloud-init/fuser/systemctl put there are what the "VM" runs.

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile, mkdir, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as net from "node:net";
import { sshKeyFingerprint } from "../../src/providers/pve/guest-ssh.js";

export interface SimSshd {
  readonly dir: string;
  readonly port: number;
  readonly hostKeyFingerprint: string;
  /** Private key of a generated client key pair that is always authorized. */
  readonly clientKey: string;
  /** Put fake commands here; sessions have it first on PATH. */
  readonly binDir: string;
  close(): Promise<void>;
}

export interface SshdOptions {
  /** Directory to use (created if missing; removed by close()). Default: a fresh temp dir. */
  readonly dir?: string;
  /** Public key lines authorized besides the generated client key (what cloud-init would install). */
  readonly authorizedKeys?: readonly string[];
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function startSshd(opts: SshdOptions = {}): Promise<SimSshd> {
  const dir = opts.dir ?? await mkdtemp(join(tmpdir(), "sim-sshd-"));
  const binDir = join(dir, "bin");
  await mkdir(binDir, { recursive: true });
  await mkdir("/run/sshd", { recursive: true });
  for (const k of ["host", "client"]) execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, k)]);
  const keys = [(await readFile(join(dir, "client.pub"), "utf8")).trim(), ...(opts.authorizedKeys ?? [])];
  await writeFile(join(dir, "authorized_keys"), `${keys.join("\n")}\n`);
  await chmod(join(dir, "authorized_keys"), 0o600);
  let proc: ChildProcess | undefined;
  let port = 0;
  // freePort can race another listener; sshd then fails to bind and we take a new port.
  for (let attempt = 1; !proc; attempt++) {
    port = await freePort();
    await writeFile(join(dir, "sshd_config"), [
      `ListenAddress 127.0.0.1:${port}`, `HostKey ${join(dir, "host")}`, `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `PidFile ${join(dir, "sshd.pid")}`, "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
      "PasswordAuthentication no", "KbdInteractiveAuthentication no",
      `SetEnv PATH=${binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, "",
    ].join("\n"));
    const p = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
    try {
      await new Promise<void>((resolve, reject) => {
        let err = "";
        const t = setTimeout(() => { p.kill("SIGKILL"); reject(new Error(`sshd did not start: ${err}`)); }, 10_000);
        p.stderr!.setEncoding("utf8").on("data", (d: string) => {
          err += d;
          if (err.includes("Server listening")) { clearTimeout(t); resolve(); }
        });
        p.on("exit", (c) => { clearTimeout(t); reject(new Error(`sshd exited ${c}: ${err}`)); });
      });
      p.removeAllListeners("exit");
      proc = p;
    } catch (e) {
      if (attempt >= 3) { await rm(dir, { recursive: true, force: true }); throw e; }
    }
  }
  const hostPub = (await readFile(join(dir, "host.pub"), "utf8")).split(" ")[1]!;
  const running = proc;
  return {
    dir, port, binDir, clientKey: await readFile(join(dir, "client"), "utf8"),
    hostKeyFingerprint: sshKeyFingerprint(Buffer.from(hostPub, "base64")),
    async close() {
      const exited = new Promise<void>((r) => { if (running.exitCode !== null || running.signalCode !== null) r(); else running.once("exit", () => r()); });
      running.kill("SIGTERM");
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
