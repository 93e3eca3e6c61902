// Shared fixtures for the ssh and git tests: temp dirs, a demo level 0 with
// exports and a running SSH endpoint, reader/controller keys, and an OpenSSH
// environment for the real git CLI. Imported by test/ssh/** and test/git/** only.

import { mkdtemp, rm, writeFile, mkdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, execSync } from "node:child_process";
import ssh2 from "ssh2";

const { utils } = ssh2;
import { silentLogger } from "../../src/log/logger.js";
import { levelPaths } from "../../src/config/level-layout.js";
import { AuthorizedKeyStore } from "../../src/ssh/authorized-key-store.js";
import { startSshEndpoint, type SshEndpoint, type SshEndpointOptions } from "../../src/ssh/ssh-endpoint.js";
import { loadOrCreateLevelKeys, generateEd25519KeyPair, type LevelKeys } from "../../src/ssh/level-keys.js";
import { generateDemoRepos } from "../../src/demo/demo-repos.js";
import { refreshExports, resolverFor } from "../../src/git/export-repos.js";
import { gitUploadPack } from "../../src/git/upload-pack.js";
import type { SyncFromParentOptions } from "../../src/git/sync-from-parent.js";

export async function tempDir(prefix = "hsd-test-"): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

export interface KeyPairFiles { privatePath: string; privateKey: string; publicKey: string }

export async function makeKeyPair(dir: string, name: string): Promise<KeyPairFiles> {
  const pair = generateEd25519KeyPair(`test-${name}`);
  const privatePath = join(dir, name);
  await writeFile(privatePath, pair.private, { mode: 0o600 });
  await writeFile(`${privatePath}.pub`, `${pair.public}\n`, { mode: 0o600 });
  return { privatePath, privateKey: pair.private, publicKey: pair.public };
}

export interface Level0 {
  dir: string;
  root: string;
  checkouts: Record<string, string>;
  exportsDir: string;
  keys: LevelKeys;
  store: AuthorizedKeyStore;
  endpoint: SshEndpoint;
  reader: KeyPairFiles;
  controller: KeyPairFiles;
  knownHosts: string;
  port: number;
  names: string[];
  /** GIT_SSH_COMMAND for OpenSSH with the given key. */
  gitEnv(key?: KeyPairFiles): NodeJS.ProcessEnv;
  url(name: string): string;
  close(): Promise<void>;
}

/** Demo repos exported by a level 0 with a live endpoint on loopback. */
export async function startLevel0(over: Partial<SshEndpointOptions> = {}): Promise<Level0> {
  const { path: dir, cleanup } = await tempDir();
  let endpoint: SshEndpoint | undefined;
  try {
    const root = join(dir, "l0");
    const paths = levelPaths(root);
    const checkouts = await generateDemoRepos(join(dir, "operator"), { seed: 7 });
    const names = Object.keys(checkouts);
    await refreshExports({ repos: checkouts, exportsDir: paths.reposDir, secretPatterns: ["secrets.yaml", "*.key", "id_rsa*", "*.pem"], log: silentLogger() });
    const keys = await loadOrCreateLevelKeys(paths.keysDir, { name: "l0" });
    const store = new AuthorizedKeyStore(paths.accessKeys, silentLogger());
    await store.load();
    const clientKeys = join(dir, "client-keys");
    await mkdir(clientKeys, { mode: 0o700 });
    const reader = await makeKeyPair(clientKeys, "reader");
    const controller = await makeKeyPair(clientKeys, "controller");
    await store.addKey({ publicKey: reader.publicKey, role: "reader" });
    await store.addKey({ publicKey: controller.publicKey, role: "controller" });
    endpoint = await startSshEndpoint({
      host: "127.0.0.1", port: 0, hostKeyPath: keys.hostKeyPath, grpcSocketPath: paths.socket,
      keys: store, uploadPack: gitUploadPack, repos: resolverFor(paths.reposDir, names), maxUploadPacks: 8, queueTimeoutMs: 10_000,
      uploadPackTimeoutS: 30, authFailureDelayMs: 20, log: silentLogger(), ...over,
    });
    const port = endpoint.address().port;
    const hostPub = utils.parseKey((await import("node:fs")).readFileSync(keys.hostKeyPath));
    if (hostPub instanceof Error || Array.isArray(hostPub)) throw new Error("host key");
    const knownHosts = join(dir, "known_hosts");
    await writeFile(knownHosts, `[127.0.0.1]:${port} ssh-ed25519 ${hostPub.getPublicSSH().toString("base64")}\n`);
    const ep = endpoint;
    return {
      dir, root, checkouts, exportsDir: paths.reposDir, keys, store, endpoint: ep, reader, controller, knownHosts, port, names,
      gitEnv: (key = reader) => ({
        ...cleanEnv(),
        GIT_SSH_COMMAND: sshCommand(key.privatePath, knownHosts, port),
      }),
      url: (name) => `ssh://hsd@127.0.0.1:${port}/${name}`,
      close: async () => { await ep.close(); await cleanup(); },
    };
  } catch (err) {
    await endpoint?.close();
    await cleanup();
    throw err;
  }
}

export function sshCommand(keyPath: string, knownHosts: string, port: number): string {
  return `ssh -F /dev/null -i ${keyPath} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=${knownHosts} ` +
    `-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -p ${port}`;
}

export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("GIT_")) env[k] = v;
  return { ...env, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", LC_ALL: "C", ...extra };
}

export interface RunResult { code: number; stdout: string; stderr: string }

/** Runs a command to completion (bounded by timeoutMs, after which it is killed and the result says so). */
export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? cleanEnv(), stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b) => { stdout += b; });
    child.stderr.on("data", (b) => { stderr += b; });
    const timer = setTimeout(() => { stderr += "\n[killed: timeout]"; child.kill("SIGKILL"); }, opts.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }); });
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

export async function git(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const r = await run("git", args, opts);
  if (r.code !== 0) throw new Error(`git ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

/** An ssh2 client session for protocol-level tests. Rejects on auth failure. */
export function connectRaw(port: number, privateKey: string, timeoutMs = 10_000): Promise<import("ssh2").Client> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    const timer = setTimeout(() => { c.destroy(); reject(new Error("connect timeout")); }, timeoutMs);
    c.on("ready", () => { clearTimeout(timer); resolve(c); });
    c.on("error", (err) => { clearTimeout(timer); reject(err); });
    c.connect({ host: "127.0.0.1", port, username: "hsd", privateKey, readyTimeout: timeoutMs, strictVendor: false });
  });
}

export interface ExecResult { stdout: Buffer; stderr: string; code: number | undefined }

/** Runs one exec to completion (channel close), feeding `input`. */
export function execRaw(c: import("ssh2").Client, cmd: string, opts: { env?: Record<string, string>; input?: Buffer; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    c.exec(cmd, { env: opts.env }, (err, ch) => {
      if (err) return reject(err);
      const out: Buffer[] = [];
      let stderr = "";
      let code: number | undefined;
      const timer = setTimeout(() => { ch.destroy(); reject(new Error("exec timeout")); }, opts.timeoutMs ?? 20_000);
      ch.on("data", (b: Buffer) => out.push(b));
      ch.stderr.on("data", (b: Buffer) => { stderr += b; });
      ch.on("exit", (c2: number | null) => { code = c2 ?? undefined; });
      ch.on("close", () => { clearTimeout(timer); resolve({ stdout: Buffer.concat(out), stderr, code }); });
      if (opts.input) ch.write(opts.input);
    });
  });
}

/** syncFromParent's options for a level at `root` fetching every repo from `l0` as its reader. */
export function syncOptions(l0: Level0, root: string, over: Partial<SyncFromParentOptions> = {}): SyncFromParentOptions {
  const p = levelPaths(root);
  return {
    parent: { host: "127.0.0.1", port: l0.port, hostKeyFingerprint: l0.endpoint.hostKeyFingerprint },
    userKeyPath: l0.reader.privatePath, repoNames: l0.names, exportsDir: p.reposDir, workDir: p.workDir,
    connectTimeoutMs: 10_000, commandTimeoutMs: 60_000, log: silentLogger(), ...over,
  };
}

/**
 * Runs `fn` with a `git` first on PATH that logs one line per call (the shell
 * words `record`, e.g. "$$ $PPID ", then its arguments) and execs the real
 * git in the same process; returns those lines.
 */
export async function gitCallLog(dir: string, record: string, fn: () => Promise<unknown>): Promise<string[]> {
  const real = execSync("command -v git", { encoding: "utf8", shell: "/bin/sh" }).trim();
  const bin = join(dir, "shim-bin");
  const logFile = join(dir, "git-commands.log");
  await mkdir(bin, { recursive: true });
  await writeFile(join(bin, "git"), `#!/bin/sh\nprintf '%s\\n' "${record}$*" >> "${logFile}"\nexec "${real}" "$@"\n`, { mode: 0o755 });
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path ?? ""}`;
  try {
    await fn();
  } finally {
    process.env.PATH = path;
  }
  return (await readFile(logFile, "utf8").catch(() => "")).split("\n").filter(Boolean);
}
