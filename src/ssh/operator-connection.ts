// hsctl --host ssh://user@host[:port]: the operator's SSH connection to a
// level's endpoint, then the same gRPC tunnel a parent uses. The host key is
// checked against the operator's known_hosts (never trusted on first use), the
// operator's key comes from -i, ssh-agent or ~/.ssh/id_ed25519, and the key
// must be a controller. Each check fails before any request is sent.
// Imported by: src/cli.

import { connect as netConnect } from "node:net";
import { readFile } from "node:fs/promises";
import ssh2, { type Client, type ConnectConfig } from "ssh2";
import type { Logger } from "../log/logger.js";
import {
  AccessDeniedError, ConnectTimeoutError, HostKeyMismatchError, HostKeyUnknownError, HsError, InvalidArgumentError,
  NotControllerError, PeerGoneError,
} from "../domain/errors.js";
import { checkHostKey, knownHostName, readKnownHosts } from "./known-hosts.js";
import { openApiChannel, serveGrpcTunnel, type GrpcTunnel } from "./grpc-tunnel.js";

const { Client: SshClient, utils } = ssh2; // CommonJS: no ESM named exports

export interface SshTarget { readonly user: string; readonly host: string; readonly port: number }

/** ssh://[user@]host[:port] (IPv6 as [addr]); the user defaults to `defaultUser`. */
export function parseSshUrl(url: string, defaultUser: string): SshTarget {
  const m = /^ssh:\/\/(?:([^@/\s]+)@)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?\/?$/.exec(url.trim());
  if (!m) throw new InvalidArgumentError(`--host must look like ssh://user@host[:port], got ${JSON.stringify(url.slice(0, 80))}`, { details: { field: "host" } });
  const port = m[3] ? Number(m[3]) : 22;
  if (port < 1 || port > 65535) throw new InvalidArgumentError(`--host port ${port} is out of range`, { details: { field: "host" } });
  return { user: m[1] ?? defaultUser, host: m[2]!.replace(/^\[|\]$/g, ""), port };
}

export interface OperatorTunnelOptions {
  readonly target: SshTarget;
  readonly knownHostsPath: string;
  /** -i: only this key. */
  readonly identityFile?: string;
  /** SSH_AUTH_SOCK, when set. */
  readonly agentSocket?: string;
  /** Tried (if it exists) when -i is not given, e.g. ~/.ssh/id_ed25519. */
  readonly defaultIdentityFile?: string;
  /** The SSH handshake and the controller check; never the command timeout. */
  readonly connectTimeoutMs: number;
  /** Where the private tunnel socket lives (0700, the caller removes it). */
  readonly socketDir: string;
  readonly log: Logger;
  readonly signal?: AbortSignal;
}

async function readKey(path: string, required: boolean): Promise<Buffer | undefined> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new InvalidArgumentError(`cannot read the identity file ${path}: ${(err as NodeJS.ErrnoException).code ?? "error"}`, { details: { field: "identity", path } });
  }
  const parsed = utils.parseKey(text);
  if (parsed instanceof Error || Array.isArray(parsed) || !parsed.isPrivateKey()) {
    const encrypted = parsed instanceof Error && /encrypt|passphrase/i.test(parsed.message);
    if (!required) return undefined;
    throw new InvalidArgumentError(encrypted
      ? `${path} is passphrase-protected: load it into ssh-agent (ssh-add ${path}) and leave -i out`
      : `${path} is not an SSH private key`, { details: { field: "identity", path } });
  }
  return text;
}

/** Connects, checks the host key and the controller role, and serves the API tunnel. */
export async function openOperatorTunnel(o: OperatorTunnelOptions): Promise<GrpcTunnel> {
  const { host, port, user } = o.target;
  const known = await readKnownHosts(o.knownHostsPath);
  const privateKey = o.identityFile
    ? await readKey(o.identityFile, true)
    : o.defaultIdentityFile ? await readKey(o.defaultIdentityFile, false) : undefined;
  const agent = o.identityFile ? undefined : o.agentSocket;
  if (!privateKey && !agent) {
    throw new AccessDeniedError("no operator key: give -i KEYFILE, run an ssh-agent with your key, or create ~/.ssh/id_ed25519", { details: { host, port } });
  }
  const client = await connectChecked(o, known, privateKey, agent);
  try {
    // The role check, before any request: a reader key is let in by the
    // endpoint but refused the API channel.
    const ch = await openApiChannel(client).catch((err: Error) => {
      throw new NotControllerError(`${host}:${port} accepted the key but not as a controller (${err.message})`, { details: { host, port } });
    });
    ch.close();
  } catch (err) {
    client.end();
    throw err;
  }
  o.log.debug({ host, port, user }, "operator tunnel up");
  return serveGrpcTunnel(client, { socketDir: o.socketDir, name: "operator", log: o.log }, () => client.end());
}

function connectChecked(o: OperatorTunnelOptions, known: Awaited<ReturnType<typeof readKnownHosts>>, privateKey: Buffer | undefined, agent: string | undefined): Promise<Client> {
  const { host, port, user } = o.target;
  const where = knownHostName(host, port);
  const client = new SshClient();
  let refused: HsError | undefined;
  return new Promise<Client>((resolve, reject) => {
    let settled = false;
    const sock = netConnect({ host, port });
    sock.setNoDelay(true);
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", onAbort);
      if (err) { client.removeAllListeners("ready"); client.on("error", () => {}); client.destroy(); sock.destroy(); reject(err); }
      else resolve(client);
    };
    const timer = setTimeout(() => finish(new ConnectTimeoutError(`no SSH session with ${host}:${port} within ${o.connectTimeoutMs} ms`, {
      details: { host, port, timeoutMs: o.connectTimeoutMs },
    })), o.connectTimeoutMs);
    const onAbort = () => finish(o.signal?.reason instanceof Error ? o.signal.reason : new PeerGoneError("connect aborted"));
    o.signal?.addEventListener("abort", onAbort, { once: true });
    sock.once("error", (err: NodeJS.ErrnoException) => finish(new PeerGoneError(`cannot reach ${host}:${port}: ${err.code ?? err.message}`, { details: { host, port }, cause: err })));
    client.on("ready", () => {
      client.removeAllListeners("error");
      client.on("error", (err) => o.log.debug({ err: err.message }, "operator connection error"));
      finish();
    });
    client.on("error", (err: Error & { level?: string }) => {
      if (refused) return finish(refused);
      if (err.level === "client-authentication") {
        return finish(new AccessDeniedError(`${host}:${port} refused the operator's key${agent ? "s (agent and file)" : ""}`, { details: { host, port } }));
      }
      finish(new PeerGoneError(`SSH connection to ${host}:${port} failed: ${err.message}`, { details: { host, port }, cause: err }));
    });
    client.on("close", () => finish(refused ?? new PeerGoneError(`${host}:${port} closed the connection during setup`)));
    const config: ConnectConfig = {
      sock, username: user, readyTimeout: o.connectTimeoutMs,
      ...(privateKey ? { privateKey } : {}),
      ...(agent ? { agent } : {}),
      hostVerifier: (key: Buffer) => {
        const keyType = wireKeyType(key);
        const v = checkHostKey(known, host, port, keyType, key);
        if (v.kind === "known") return true;
        const scan = `ssh-keyscan -p ${port} ${host} >> ${o.knownHostsPath}`;
        if (v.kind === "unknown") {
          refused = new HostKeyUnknownError(`the host key of ${where} is not in ${o.knownHostsPath}: ${keyType} ${v.fingerprint}`, {
            details: {
              host, port, fingerprint: v.fingerprint,
              hint: `if ${v.fingerprint} is that level's key (its hsd logs it at start as hostKeyFingerprint; \`hsctl status\` there shows it), accept it: ${scan}`,
            },
          });
        } else if (v.kind === "changed") {
          refused = new HostKeyMismatchError(`the host key of ${where} changed: it is now ${v.fingerprint}, ${o.knownHostsPath} has ${v.knownFingerprints.join(", ")} (line ${v.lines.join(", ")})`, {
            details: {
              host, port, fingerprint: v.fingerprint, known: v.knownFingerprints,
              hint: `if the level was rebuilt and ${v.fingerprint} is its new key: ssh-keygen -R '${where}' -f ${o.knownHostsPath}; ${scan}`,
            },
          });
        } else {
          refused = new HostKeyMismatchError(`the host key of ${where} (${v.fingerprint}) is marked @revoked in ${o.knownHostsPath}`, {
            details: { host, port, fingerprint: v.fingerprint, hint: "a revoked key is never accepted; ask who runs that level" },
          });
        }
        return false;
      },
    };
    client.connect(config);
  });
}

/** The key type a wire-format public key names in its first field ("ssh-ed25519"). */
function wireKeyType(blob: Buffer): string {
  if (blob.length < 4) return "";
  const n = blob.readUInt32BE(0);
  return n > 0 && n < 64 && blob.length >= 4 + n ? blob.subarray(4, 4 + n).toString("latin1") : "";
}
