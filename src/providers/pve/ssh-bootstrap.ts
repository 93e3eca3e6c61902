// Installing hsd into a fresh VM over its OpenSSH: connect (connect timeout
// separate from command timeouts, host key trusted on first use then pinned),
// wait out cloud-init and apt locks (seed lesson 7), copy the bundle, install
// the unit, start, wait for health. Imported only by the pve provider.

import { createHash } from "node:crypto";
import ssh2 from "ssh2";
import {
  AccessDeniedError, CommandTimeoutError, ConnectTimeoutError, HostKeyMismatchError, ProviderError,
} from "../../errors/hs-error.js";
import { MAX_CONNECT_MS } from "../../config/config.js";
import { withTimeout } from "../../util/timeout.js";
import type { CommandResult } from "./command-runner.js";
import { defaultSleep, type Sleep } from "./pve-client.js";

const { Client } = ssh2; // CommonJS: no ESM named exports

export interface GuestSshOptions {
  readonly host: string;
  readonly port?: number;
  readonly username?: string;
  readonly privateKey: string | Buffer;
  /** "SHA256:..." pinned host key; empty/undefined = trust on first use (then pinned on this object). */
  readonly hostKeyFingerprint?: string;
  /** Handshake + auth; at most 30 s. Default 10 s. */
  readonly connectTimeoutMs?: number;
}

export function sshKeyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

export class GuestSsh {
  private constructor(private readonly conn: InstanceType<typeof Client>, readonly hostKeyFingerprint: string) {}

  static connect(o: GuestSshOptions): Promise<GuestSsh> {
    const connectTimeoutMs = Math.min(o.connectTimeoutMs ?? 10_000, MAX_CONNECT_MS);
    return new Promise((resolve, reject) => {
      const conn = new Client();
      let seen = "";
      let mismatch = false;
      conn.on("ready", () => resolve(new GuestSsh(conn, seen)));
      conn.on("error", (e: Error & { level?: string }) => {
        conn.end();
        if (mismatch) {
          reject(new HostKeyMismatchError(`host key of ${o.host} changed: expected ${o.hostKeyFingerprint}, got ${seen}`, {
            details: { host: o.host, expected: o.hostKeyFingerprint, actual: seen },
          }));
        } else if (e.level === "client-authentication") {
          reject(new AccessDeniedError(`${o.host} refused our key`, { details: { host: o.host } }));
        } else if (/timed out/i.test(e.message)) {
          reject(new ConnectTimeoutError(`no SSH session with ${o.host}:${o.port ?? 22} within ${connectTimeoutMs} ms`, { details: { host: o.host } }));
        } else {
          reject(new ProviderError(`SSH to ${o.host}:${o.port ?? 22} failed: ${e.message}`, { details: { host: o.host }, cause: e }));
        }
      });
      conn.connect({
        host: o.host, port: o.port ?? 22, username: o.username ?? "root", privateKey: o.privateKey,
        readyTimeout: connectTimeoutMs, keepaliveInterval: 15_000,
        hostVerifier: (key: Buffer) => {
          seen = sshKeyFingerprint(key);
          mismatch = !!o.hostKeyFingerprint && o.hostKeyFingerprint !== seen;
          return !mismatch;
        },
      });
    });
  }

  /** Runs one command with its own timeout; never rejects for a non-zero exit. */
  exec(cmd: string, opts: { timeoutMs: number; stdin?: Buffer | string; signal?: AbortSignal }): Promise<CommandResult> {
    return withTimeout(opts.timeoutMs, () => new CommandTimeoutError(`remote command did not finish within ${opts.timeoutMs} ms`, {
      details: { command: cmd.split(" ")[0] },
    }), (signal) => new Promise<CommandResult>((resolve, reject) => {
      this.conn.exec(cmd, (err, ch) => {
        if (err) { reject(new ProviderError(`cannot run a remote command: ${err.message}`, { cause: err })); return; }
        let stdout = "";
        let stderr = "";
        signal.addEventListener("abort", () => ch.close(), { once: true });
        ch.on("data", (d: Buffer) => { stdout += d.toString("utf8"); });
        ch.stderr.on("data", (d: Buffer) => { stderr += d.toString("utf8"); });
        ch.on("close", (code: number | null) => resolve({ code: code ?? 255, stdout, stderr }));
        ch.end(opts.stdin);
      });
    }), opts.signal);
  }

  close(): void { this.conn.end(); }
}

export interface BootstrapOptions {
  /** The tar.gz made by scripts/bundle.mjs, as bytes. */
  readonly bundle: Buffer;
  readonly remoteDir: string;
  readonly configPath: string;
  readonly configYaml: string;
  readonly unitPath: string;
  readonly unitText: string;
  /** Exit 0 once the child's hsd is healthy. */
  readonly healthCommand: string;
  /** Prepended to PATH for every remote command (tests put fakes first). */
  readonly pathPrefix?: string;
  readonly cloudInitTimeoutMs?: number;
  readonly aptLockTimeoutMs?: number;
  readonly healthTimeoutMs?: number;
  readonly commandTimeoutMs?: number;
  readonly pollMs?: number;
  readonly sleep?: Sleep;
  readonly signal: AbortSignal;
  readonly log: (message: string) => void;
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export async function bootstrapHsd(ssh: GuestSsh, o: BootstrapOptions): Promise<void> {
  const sleep = o.sleep ?? defaultSleep;
  const env = o.pathPrefix ? `PATH=${q(o.pathPrefix)}:"$PATH" ` : "";
  const cmdMs = o.commandTimeoutMs ?? 60_000;
  const run = (cmd: string, timeoutMs = cmdMs, stdin?: Buffer | string) => ssh.exec(`${env}sh -c ${q(cmd)}`, { timeoutMs, stdin, signal: o.signal });
  const must = async (what: string, cmd: string, timeoutMs?: number, stdin?: Buffer | string) => {
    const r = await run(cmd, timeoutMs, stdin);
    if (r.code !== 0) throw new ProviderError(`${what} failed on the child (exit ${r.code}): ${r.stderr.trim().split("\n")[0] ?? ""}`, { details: { step: what } });
    return r;
  };

  // From outside cloud-init only: inside its own runcmd this would wait for itself.
  const ci = await run("cloud-init status --wait", o.cloudInitTimeoutMs ?? 600_000);
  if (ci.code === 127) o.log("cloud-init not installed; not waiting for it");
  else if (ci.code === 0 || ci.code === 2) o.log(`cloud-init finished${ci.code === 2 ? " with recoverable errors" : ""}`);
  else throw new ProviderError(`cloud-init failed on the child: ${ci.stdout.trim().split("\n").at(-1) ?? ""}`, { details: { step: "cloud-init" } });

  await run("systemctl stop apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service");
  const lockMs = o.aptLockTimeoutMs ?? 300_000;
  await withTimeout(lockMs, () => new CommandTimeoutError(`apt/dpkg lock still held after ${lockMs} ms`, { details: { step: "apt-lock" } }), async (signal) => {
    for (let said = false; ;) {
      const r = await run("fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock");
      if (r.code !== 0) return; // fuser exits 1 when no process holds any of them
      if (!said) o.log("waiting for apt/dpkg to release its lock");
      said = true;
      await sleep(o.pollMs ?? 2000, signal);
    }
  }, o.signal);

  o.log(`copying the hsd bundle (${o.bundle.length} bytes)`);
  const tmp = `${o.remoteDir}.bundle.tgz`;
  await must("bundle copy", `mkdir -p ${q(o.remoteDir)} && cat > ${q(tmp)}`, cmdMs, o.bundle);
  await must("bundle unpack", `tar -xzf ${q(tmp)} -C ${q(o.remoteDir)} && rm -f ${q(tmp)}`);
  const put = (path: string, mode: string, text: string) =>
    must(`write ${path}`, `umask 077; mkdir -p "$(dirname ${q(path)})" && cat > ${q(path)}.tmp && chmod ${mode} ${q(path)}.tmp && mv ${q(path)}.tmp ${q(path)}`, cmdMs, text);
  await put(o.configPath, "600", o.configYaml);
  await put(o.unitPath, "644", o.unitText);
  await must("systemctl daemon-reload", "systemctl daemon-reload");
  await must("start hsd", "systemctl enable --now hsd");

  const healthMs = o.healthTimeoutMs ?? 120_000;
  await withTimeout(healthMs, () => new CommandTimeoutError(`the child's hsd was not healthy within ${healthMs} ms`, { details: { step: "health" } }), async (signal) => {
    for (;;) {
      if ((await run(o.healthCommand)).code === 0) return;
      await sleep(o.pollMs ?? 1000, signal);
    }
  }, o.signal);
  o.log("hsd is running on the child");
}
