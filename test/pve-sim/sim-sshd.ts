// A real OpenSSH sshd on 127.0.0.1 standing in for a booted VM's sshd.
// Test-only. Keys are generated per instance; stopped and removed by close().

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile, mkdir, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as net from "node:net";
import { sshKeyFingerprint } from "../../src/providers/pve/ssh-bootstrap.js";

export interface SimSshd {
  readonly dir: string;
  readonly port: number;
  readonly hostKeyFingerprint: string;
  readonly clientKey: string;
  /** Put fake commands here; tests prepend it to PATH. */
  readonly binDir: string;
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function startSshd(): Promise<SimSshd> {
  const dir = await mkdtemp(join(tmpdir(), "sim-sshd-"));
  const binDir = join(dir, "bin");
  await mkdir(binDir);
  await mkdir("/run/sshd", { recursive: true });
  for (const k of ["host", "client"]) execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, k)]);
  await writeFile(join(dir, "authorized_keys"), await readFile(join(dir, "client.pub")));
  await chmod(join(dir, "authorized_keys"), 0o600);
  const port = await freePort();
  await writeFile(join(dir, "sshd_config"), [
    `ListenAddress 127.0.0.1:${port}`, `HostKey ${join(dir, "host")}`, `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    `PidFile ${join(dir, "sshd.pid")}`, "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
    "PasswordAuthentication no", "KbdInteractiveAuthentication no", "",
  ].join("\n"));
  const proc: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
  await new Promise<void>((resolve, reject) => {
    let err = "";
    const t = setTimeout(() => reject(new Error(`sshd did not start: ${err}`)), 10_000);
    proc.stderr!.setEncoding("utf8").on("data", (d: string) => {
      err += d;
      if (err.includes("Server listening")) { clearTimeout(t); resolve(); }
    });
    proc.on("exit", (c) => { clearTimeout(t); reject(new Error(`sshd exited ${c}: ${err}`)); });
  });
  proc.removeAllListeners("exit");
  const hostPub = (await readFile(join(dir, "host.pub"), "utf8")).split(" ")[1]!;
  return {
    dir, port, binDir, clientKey: await readFile(join(dir, "client"), "utf8"),
    hostKeyFingerprint: sshKeyFingerprint(Buffer.from(hostPub, "base64")),
    async close() {
      const exited = new Promise<void>((r) => { if (proc.exitCode !== null) r(); else proc.once("exit", () => r()); });
      proc.kill("SIGTERM");
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
