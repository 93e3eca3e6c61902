// The configure-phase setup of a level that is itself a PVE node: /etc/hosts
// and the pveproxy certificate (seed lesson 4), this level's own API token via
// pveum (never recreated while one exists), snippets on the snippet storage
// (seed lesson 3). Called by the level's configure when its provider is pve.
// Imported by: src/providers/pve.

import { hostname as osHostname } from "node:os";
import { lookup } from "node:dns/promises";
import { DEFAULT_PVE_IMAGE, type PveConfig } from "./pve-config.js";
import { CommandFailedError, PreflightError, PveTokenExistsError } from "../../domain/errors.js";
import { firstLine, missingAs127, type CommandRunner } from "../../util/command-runner.js";
import { failedChecksError, type CheckResult } from "../../domain/checks.js";
import { PveClient, defaultSleep, type PveClientOptions, type Sleep } from "./pve-client.js";
import { apiCheck, certInfo, hostnameResolution, proxyCertificate, snippetsContent, type PreflightDeps } from "./preflight.js";
import { STEP_HINTS, VALUE_HINTS } from "../../domain/hints.js";

export interface ConfigurePveLevelOptions {
  /** Host commands (pveum, pvecm, sysctl, systemctl, ip), run as root on this node. */
  readonly commands: CommandRunner;
  /** USER@REALM!TOKENID. Default root@pam!hsd. */
  readonly tokenId?: string;
  /** The secret secrets.yaml already holds for tokenId (pve.token_secret), if any. */
  readonly tokenSecret?: string;
  /**
   * Persists a newly created secret (secrets.yaml pve.token_secret, 0600, atomic)
   * before anything else can fail: PVE shows it once. Never logged.
   */
  readonly saveTokenSecret: (secret: string) => Promise<void>;
  /** Default https://127.0.0.1:8006 (this node's own API). */
  readonly apiUrl?: string;
  readonly node?: string;
  readonly snippetStorage?: string;
  /** Its IPv4 address goes into /etc/hosts when the hostname resolves to nothing usable. Default vmbr0. */
  readonly bridge?: string;
  readonly hostname?: string;
  readonly fqdn?: string;
  readonly hostsFile?: string;
  readonly pveCertFile?: string;
  readonly resolveHost?: (name: string) => Promise<string[]>;
  /** Extra client options (timeouts; tests shorten retries). */
  readonly clientOptions?: Partial<PveClientOptions>;
  readonly sleep?: Sleep;
  readonly signal: AbortSignal;
  readonly log?: (message: string) => void;
}

export interface ConfigurePveLevelResult {
  readonly checks: readonly CheckResult[];
  readonly tokenId: string;
  /** True when the token was created by this call (its secret went to saveTokenSecret). */
  readonly tokenCreated: boolean;
  /** SHA-256 fingerprint of the API certificate after any repair: this level's pve.fingerprint. */
  readonly fingerprint: string;
  /** A client on this node's API with the level's token, pinned to that fingerprint. */
  readonly client: PveClient;
  /** What GET /version answered with (the template's checks take it; "" when unknown: they ask). */
  readonly version: string;
}

const TOKEN_ID_RE = /^([^@!\s]+@[^@!\s]+)!([A-Za-z][A-Za-z0-9.\-_]+)$/;

export async function configurePveLevel(o: ConfigurePveLevelOptions): Promise<ConfigurePveLevelResult> {
  const commands = missingAs127(o.commands);
  const tokenId = o.tokenId ?? "root@pam!hsd";
  const m = TOKEN_ID_RE.exec(tokenId);
  if (!m) throw new PreflightError(`pve.token_id ${JSON.stringify(tokenId)} is not USER@REALM!TOKENID`, { details: { step: "token" } });
  const [, user, id] = m as unknown as [string, string, string];
  const log = o.log ?? (() => {});
  const certFile = o.pveCertFile ?? "/etc/pve/local/pve-ssl.pem";
  const hostname = o.hostname ?? osHostname().split(".")[0]!;
  const config: PveConfig = {
    image: DEFAULT_PVE_IMAGE, url: o.apiUrl ?? "https://127.0.0.1:8006", node: o.node ?? hostname, tokenId, fingerprint: "",
    storage: "local-lvm", snippetStorage: o.snippetStorage ?? "local", template: 9000, bridge: o.bridge ?? "vmbr0", cores: 1, memoryMiB: 1024,
  };
  const checks: CheckResult[] = [];
  const note = (c: CheckResult) => { checks.push(c); log(`${c.name}: ${c.result} - ${c.detail}`); return c; };

  const cert = await certInfo(certFile);
  if (!cert) {
    throw new PreflightError(`no ${certFile}: Proxmox VE is not installed on this level`, {
      details: { step: "pveproxy-cert", hint: STEP_HINTS.pveNotInstalled },
    });
  }
  const deps = (client: PveClient): PreflightDeps => ({
    client, config, commands, sysRoot: "/sys", hostsFile: o.hostsFile ?? "/etc/hosts", pveCertFile: certFile, hostname, fqdn: o.fqdn,
    resolveHost: o.resolveHost ?? (async (n) => (await lookup(n, { all: true })).map((a) => a.address)),
    minFreeKiB: 0, sleep: o.sleep ?? defaultSleep, signal: o.signal,
  });
  const clientWith = (secret: string) => new PveClient({
    url: config.url, fingerprint: cert.fingerprint, tokenId, tokenSecret: secret, sleep: o.sleep, ...o.clientOptions,
  });

  // 2. The token: never recreated, which would invalidate the secret in use. Holding a secret,
  // look first (a token removed meanwhile is made anew). Holding none, ask for it at once: PVE
  // refuses an existing one and changes nothing, and a fresh level spends one pveum, not two.
  // pveum writes the access config through pmxcfs and needs neither the hostname nor pveproxy's
  // certificate: it runs (a perl start, ~0.5 s on PVE) while step 1 checks and repairs those.
  const exists = () => new PveTokenExistsError(`token ${tokenId} exists but this level's secrets.yaml has no pve.token_secret for it`, {
    details: { step: "token", tokenId, hint: VALUE_HINTS.staleToken(user, id) },
  });
  const tokenWork = (async (): Promise<{ secret: string | undefined; created: boolean }> => {
    let existing = false;
    if (o.tokenSecret) {
      const list = await commands(["pveum", "user", "token", "list", user, "--output-format", "json"], { signal: o.signal, label: "pveum user token list" });
      if (list.code !== 0) throw new CommandFailedError(`pveum user token list failed: ${firstLine(list.stderr)}`, { details: { step: "token", command: "pveum" } });
      existing = (JSON.parse(list.stdout || "[]") as { tokenid: string }[]).some((t) => t.tokenid === id);
    }
    if (existing) return { secret: o.tokenSecret, created: false };
    // The secret arrives on stdout (never argv) and goes straight to the caller's store.
    const add = await commands(["pveum", "user", "token", "add", user, id, "--privsep", "0", "--comment", "hsd", "--output-format", "json"],
      { signal: o.signal, label: "pveum user token add" });
    // PVE's answer for a token id in use: 400, errors.tokenid "Token already exists.".
    if (add.code !== 0 && /Token already exists/.test(add.stderr)) throw exists();
    if (add.code !== 0) throw new CommandFailedError(`pveum user token add failed: ${firstLine(add.stderr)}`, { details: { step: "token", command: "pveum" } });
    const value = (JSON.parse(add.stdout) as { value?: unknown }).value;
    if (typeof value !== "string" || !value) throw new CommandFailedError("pveum user token add printed no secret", { details: { step: "token", command: "pveum" } });
    return { secret: value, created: true };
  })();
  tokenWork.catch(() => {}); // awaited after step 1

  // 1. The address pveproxy's certificate will carry, then the certificate itself (lesson 4).
  const hostCert = (async () => {
    note(await hostnameResolution(deps(clientWith(o.tokenSecret ?? ""))));
    // The client made here follows a regenerated certificate (preflight re-pins it); the secret comes next.
    const probe = clientWith(o.tokenSecret ?? "");
    return { probe, cert: note(await proxyCertificate(deps(probe))) };
  })();
  const [hc, tk] = await Promise.allSettled([hostCert, tokenWork]);
  // 3. The API with that token (asked while the new secret is being stored: an fsync'd write),
  // then snippets through it. The secret is stored before any outcome is reported or thrown:
  // PVE shows it once, so not even a failed step 1 may lose it.
  const created = tk.status === "fulfilled" && tk.value.created;
  const secret = tk.status === "fulfilled" ? tk.value.secret : undefined;
  const saving = created ? o.saveTokenSecret(secret!) : Promise.resolve();
  saving.catch(() => {}); // awaited next
  if (hc.status === "rejected" || tk.status === "rejected") {
    await saving;
    throw hc.status === "rejected" ? hc.reason : (tk as PromiseRejectedResult).reason;
  }
  const { probe, cert: certCheck } = hc.value;
  const client = clientWith(secret!);
  if (probe.fingerprint !== cert.fingerprint) client.setFingerprint(probe.fingerprint);
  const restarted = certCheck.result === "repaired";
  const asking = apiCheck(deps(client), restarted ? 10 : 3);
  asking.catch(() => {}); // awaited once the secret is stored
  // Snippets through the same API, asked beside it unless pveproxy is coming back from a new
  // certificate (then after it answers). Reported only when the API check passed; asked
  // again then if that early answer was an error (the API check may have needed retries).
  const snippets = restarted ? undefined : snippetsContent(deps(client));
  snippets?.catch(() => {}); // awaited (or dropped) once the API check is in
  await saving;
  note({ name: "token", result: created ? "repaired" : "ok", detail: created ? `created ${tokenId} (privsep 0); secret stored` : `${tokenId} exists and its secret is held` });
  const { check, version } = await asking;
  const api = note(check);
  if (api.result !== "failed") note(await (snippets ?? Promise.reject()).catch(() => snippetsContent(deps(client))));

  const err = failedChecksError(checks, "PVE setup of this level failed", { step: "configure" });
  if (err) throw err;
  return { checks, tokenId, tokenCreated: created, fingerprint: client.fingerprint, client, version: version ?? "" };
}
