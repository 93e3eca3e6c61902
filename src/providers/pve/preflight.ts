// The pve provider's preflight: each check reports ok / repaired / failed with
// a hint, and repairs only what is safe (snippets content, /etc/hosts entry,
// the lesson-4 certificate sequence). Every host side effect goes through
// injected paths and the CommandRunner.
// Imported by: src/providers/pve.

import { readFile } from "node:fs/promises";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import type { PveConfig } from "./pve-config.js";
import type { CheckResult } from "../../domain/checks.js";
import { errorCode, HsError } from "../../domain/errors.js";
import { writeFileAtomic } from "../../util/atomic-write.js";
import type { CommandRunner } from "../../util/command-runner.js";
import type { PveClient, Sleep } from "./pve-client.js";
import { isPveError } from "./pve-client.js";
import { STEP_HINTS, VALUE_HINTS } from "../../domain/hints.js";
import { PVE_MAX_TESTED_MAJOR, PVE_MIN_MAJOR, pveVersionSupport } from "./pve-version.js";

export interface PreflightDeps {
  readonly client: PveClient;
  readonly config: PveConfig;
  readonly commands: CommandRunner;
  /** Usually "/sys". */
  readonly sysRoot: string;
  /** Usually "/etc/hosts". */
  readonly hostsFile: string;
  /** Usually "/etc/pve/local/pve-ssl.pem" (what `pvecm updatecerts` writes). */
  readonly pveCertFile: string;
  /** This node's short hostname. */
  readonly hostname: string;
  /** Fully qualified name for a repaired /etc/hosts entry (default: found in /etc/hosts, else hostname). */
  readonly fqdn?: string;
  /** Name resolution used when /etc/hosts has no entry. */
  readonly resolveHost: (name: string) => Promise<string[]>;
  readonly minFreeKiB: number;
  readonly sleep: Sleep;
  readonly signal: AbortSignal;
  /**
   * Makes the template when pve.template's vmid is free (level 0 with its image); its checks
   * replace "template". `version`: PVE's, as this preflight has just read it ("": unknown), so
   * the template's own checks ask neither it nor the slot again.
   */
  readonly makeTemplate?: (version: string) => Promise<CheckResult[]>;
  /** The outcome of a template making this provider has under way (a side-by-side preflight's), if any. */
  readonly templateInFlight?: () => Promise<CheckResult[]> | undefined;
  /**
   * pve.storage's free space when the caller shares one answer (with the template's checks):
   * asked once the API check is done, of the API when it passed (storageAvail), else of pvesm.
   */
  readonly storageAvail?: (apiUp: boolean) => Promise<StorageAvail>;
}

type Check = CheckResult;
const ok = (name: string, detail: string): Check => ({ name, result: "ok", detail });
const repaired = (name: string, detail: string): Check => ({ name, result: "repaired", detail });
const failed = (name: string, detail: string, hint: string): Check => ({ name, result: "failed", detail, hint });

export async function runPreflight(d: PreflightDeps): Promise<Check[]> {
  // The host-only check (ip: a process) runs beside the API's; reported in its place.
  const bridge = guard("bridge", () => bridgeExists(d));
  const nested = nestedVirt(d);
  // The API is asked beside the host checks: the answer stands unless the certificate was
  // repaired under it (pveproxy restarted with a new one), and then it is asked again.
  const firstAsk = apiCheck(d, 1);
  const host = hostnameResolution(d);
  host.catch(() => {}); // awaited next, in the report's order
  const out: Check[] = [await nested, await host];
  const cert = await proxyCertificate(d);
  out.push(cert);
  const { check: api, version } = cert.result === "repaired" ? await apiCheck(d, 10) : await firstAsk;
  out.push(api);
  const apiUp = api.result !== "failed";
  // The storage's free space beside the checks below: the API's answer once it is known to
  // answer (a bad token is refused once, not twice), else pvesm's. The three API reads share nothing.
  const disk = guard("disk-space", () => diskSpace(d, apiUp));
  const skip = (name: string) => failed(name, "not checked: the PVE API check failed", STEP_HINTS.apiCheckFirst);
  const node = apiUp ? guard("node", () => nodeOnline(d)) : skip("node");
  const snippets = apiUp ? guard("snippets", () => snippetsContent(d)) : skip("snippets");
  const template = apiUp ? templateChecks(d, version) : [skip("template")];
  out.push(await node, await snippets, ...(await template), await bridge, await disk);
  return out;
}

async function guard(name: string, fn: () => Promise<Check>): Promise<Check> {
  try { return await fn(); } catch (e) {
    return failed(name, `${errorCode(e)}: ${e instanceof Error ? e.message : String(e)}`, STEP_HINTS.seeErrorCode);
  }
}

async function nestedVirt(d: PreflightDeps): Promise<Check> {
  for (const mod of ["kvm_intel", "kvm_amd"]) {
    const file = join(d.sysRoot, "module", mod, "parameters", "nested");
    let v: string;
    try { v = (await readFile(file, "utf8")).trim(); } catch { continue; }
    if (v === "Y" || v === "1") return ok("nested-virt", `${mod} nested=${v}`);
    return failed("nested-virt", `${mod} nested=${v}: child VMs cannot run KVM`,
      VALUE_HINTS.nestedVirtOff(mod));
  }
  return failed("nested-virt", "neither kvm_intel nor kvm_amd is loaded", STEP_HINTS.noKvm);
}

/** Loopback, link-local (with or without a zone id): unusable as the node's certificate address. */
export function isUnroutable(addr: string): boolean {
  const a = addr.split("%")[0]!.toLowerCase();
  return a.startsWith("127.") || a === "::1" || a.startsWith("169.254.") || /^fe[89ab][0-9a-f]:/.test(a);
}

function hostsEntries(text: string): { addr: string; names: string[]; line: number }[] {
  return text.split("\n").map((raw, line) => {
    const t = raw.replace(/#.*/, "").trim().split(/\s+/).filter(Boolean);
    return { addr: t[0] ?? "", names: t.slice(1), line };
  }).filter((e) => e.addr && e.names.length);
}

export async function hostnameResolution(d: PreflightDeps): Promise<Check> {
  const name = "hostname";
  let text = "";
  try { text = await readFile(d.hostsFile, "utf8"); } catch { /* resolver only */ }
  const mine = hostsEntries(text).filter((e) => e.names.some((n) => n === d.hostname || n.startsWith(`${d.hostname}.`)));
  const first = mine[0]?.addr ?? (await d.resolveHost(d.hostname).catch(() => []))[0];
  if (first && !isUnroutable(first)) return ok(name, `${d.hostname} resolves to ${first}`);
  // pvecm updatecerts puts this address into the certificate; fix it before PVE reads it.
  const r = await d.commands(["ip", "-4", "-o", "addr", "show", "dev", d.config.bridge], { signal: d.signal });
  const ipv4 = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout)?.[1];
  if (r.code !== 0 || !ipv4) {
    return failed(name, `${d.hostname} resolves to ${first ?? "nothing"} and ${d.config.bridge} has no IPv4 address`,
      VALUE_HINTS.hostsEntry(d.hostname, d.hostsFile));
  }
  const fqdn = d.fqdn ?? mine.flatMap((e) => e.names).find((n) => n.startsWith(`${d.hostname}.`));
  const entry = `${ipv4} ${fqdn ? `${fqdn} ` : ""}${d.hostname}`;
  const lines = text ? text.replace(/\n$/, "").split("\n") : [];
  const at = mine[0]?.line ?? lines.length;
  lines.splice(at, 0, entry);
  await writeFileAtomic(d.hostsFile, `${lines.join("\n")}\n`, { mode: 0o644 });
  return repaired(name, `${d.hostname} resolved to ${first ?? "nothing"}; added "${entry}" to ${d.hostsFile}`);
}

export async function certInfo(file: string): Promise<{ sans: string; fingerprint: string } | undefined> {
  let pem: string;
  try { pem = await readFile(file, "utf8"); } catch { return undefined; }
  const x = new X509Certificate(pem);
  return { sans: x.subjectAltName ?? "", fingerprint: x.fingerprint256 };
}

export async function proxyCertificate(d: PreflightDeps): Promise<Check> {
  const name = "pveproxy-cert";
  const before = await certInfo(d.pveCertFile);
  if (!before) return ok(name, `no ${d.pveCertFile} on this host (remote API): relying on the pinned fingerprint`);
  if (!before.sans.includes("%")) return ok(name, "certificate SANs carry no zone-id address");
  // Seed lesson 4: with IPv6 off, updatecerts cannot pick a link-local address.
  const steps: [string, string[]][] = [
    ["sysctl", ["-w", "net.ipv6.conf.all.disable_ipv6=1"]],
    ["pvecm", ["updatecerts", "--force"]],
  ];
  const hint = STEP_HINTS.zoneIdSan;
  let err = "";
  try {
    for (const [cmd, args] of steps) {
      const r = await d.commands([cmd, ...args], { signal: d.signal, timeoutMs: 60_000 });
      if (r.code !== 0) { err = `${cmd} ${args.join(" ")}: ${r.stderr.split("\n")[0]}`; break; }
    }
  } finally {
    const r = await d.commands(["sysctl", "-w", "net.ipv6.conf.all.disable_ipv6=0"], { signal: d.signal });
    if (r.code !== 0 && !err) err = `re-enabling IPv6 failed: ${r.stderr.split("\n")[0]}`;
  }
  if (!err) {
    const r = await d.commands(["systemctl", "restart", "pveproxy"], { signal: d.signal, timeoutMs: 60_000 });
    if (r.code !== 0) err = `systemctl restart pveproxy: ${r.stderr.split("\n")[0]}`;
  }
  if (err) return failed(name, `zone-id SAN in ${d.pveCertFile}; repair failed: ${err}`, hint);
  const after = await certInfo(d.pveCertFile);
  if (!after || after.sans.includes("%")) return failed(name, "certificate still has a zone-id SAN after regeneration", hint);
  let pin = "";
  // The local file is a trusted channel (we are root on the node): follow the regenerated cert.
  if (d.client.fingerprint === before.fingerprint) {
    d.client.setFingerprint(after.fingerprint);
    pin = `; re-pinned the API to ${after.fingerprint} (update pve.fingerprint)`;
  }
  return repaired(name, `regenerated the certificate without the zone-id SAN and restarted pveproxy${pin}`);
}

/** The "api" check, and the version PVE answered with when it passed (a template's checks take it as theirs). */
export async function apiCheck(d: PreflightDeps, attempts: number): Promise<{ check: Check; version?: string }> {
  const done = (check: Check) => ({ check });
  for (let i = 1; ; i++) {
    try {
      const v = await d.client.api("GET /version", {}, { signal: d.signal });
      const support = pveVersionSupport(v.version);
      if (!support.supported) {
        return done(failed("api", `${support.note}; hsd supports PVE ${PVE_MIN_MAJOR}.x to ${PVE_MAX_TESTED_MAJOR}.x`,
          STEP_HINTS.pveTooOld));
      }
      return {
        check: ok("api", `PVE ${v.version} answers and token ${d.client.tokenId} is accepted${support.note ? ` (${support.note})` : ""}`),
        version: String(v.version),
      };
    } catch (e) {
      const code = errorCode(e);
      if (code === "PveAuth") {
        return done(failed("api", `token ${d.client.tokenId} was refused (401)`,
          VALUE_HINTS.tokenRefused(d.client.tokenId)));
      }
      if (code === "PveUnreachable" && i < attempts) { await d.sleep(500 * i, d.signal); continue; }
      const msg = e instanceof HsError ? e.message : String(e);
      const hint = code === "PveFingerprintMismatch" || code === "PveNotPinned"
        ? String((e as HsError).details.hint ?? STEP_HINTS.pveFingerprint)
        : STEP_HINTS.pveproxyDown;
      return done(failed("api", `${code}: ${msg}`, hint));
    }
  }
}

async function nodeOnline(d: PreflightDeps): Promise<Check> {
  const nodes = await d.client.api("GET /nodes", {}, { signal: d.signal });
  const n = nodes.find((x) => x.node === d.config.node);
  if (!n) return failed("node", `node ${d.config.node} is not in this cluster (${nodes.map((x) => x.node).join(", ")})`, STEP_HINTS.unknownNode);
  if (n.status !== "online") return failed("node", `node ${d.config.node} is ${n.status}`, STEP_HINTS.nodeOffline);
  return ok("node", `node ${d.config.node} is online`);
}

/**
 * The fields hsd reads from GET /storage/{storage}. PVE's schema declares that
 * answer only as an object (its keys depend on the storage type), so they are
 * checked here instead of by the schema's `returns`.
 */
export function storageFields(s: Readonly<Record<string, unknown>>): { content: string; digest?: string; path?: string } {
  const str = (v: unknown) => (typeof v === "string" && v ? v : undefined);
  return { content: str(s.content) ?? "", digest: str(s.digest), path: str(s.path) };
}

export async function snippetsContent(d: PreflightDeps): Promise<Check> {
  const id = d.config.snippetStorage;
  const s = storageFields(await d.client.api("GET /storage/{storage}", { storage: id }, { signal: d.signal }));
  const content = s.content.split(",").filter(Boolean);
  if (!s.path) return failed("snippets", `storage ${id} has no directory path for snippet files`, STEP_HINTS.snippetStorageNotDir);
  if (content.includes("snippets")) return ok("snippets", `storage ${id} allows snippets (${s.path}/snippets)`);
  // PUT content REPLACES the set: write back the full list plus snippets, guarded by digest.
  const full = [...content, "snippets"].join(",");
  await d.client.api("PUT /storage/{storage}", { storage: id, content: full, digest: s.digest }, { signal: d.signal });
  const again = storageFields(await d.client.api("GET /storage/{storage}", { storage: id }, { signal: d.signal }));
  if (!again.content.split(",").includes("snippets")) {
    return failed("snippets", `storage ${id} still lacks snippets after the update`, VALUE_HINTS.snippetsContent(id, full));
  }
  return repaired("snippets", `storage ${id} content was "${content.join(",")}"; now "${full}"`);
}

/** The template at pve.template: it exists (yours or one hsd made), or level 0 makes it from its image. */
async function templateChecks(d: PreflightDeps, version: string | undefined): Promise<Check[]> {
  const t = d.config.template;
  const getConfig = () => d.client.api("GET /nodes/{node}/qemu/{vmid}/config", { node: d.config.node, vmid: t }, { signal: d.signal }).catch((e: unknown) => {
    if (isPveError(e, 500, /does not exist/)) return undefined;
    throw e;
  });
  try {
    const making = d.templateInFlight?.();
    if (making) return await making;
    let c = await getConfig();
    if (c && String(c.template ?? "") !== "1") {
      // Half made by a side-by-side preflight of this level: share that outcome, or read the finished state.
      const during = d.templateInFlight?.();
      if (during) return await during;
      c = await getConfig();
    }
    if (!c && d.makeTemplate) return await d.makeTemplate(version ?? "");
    if (!c) return [failed("template", `VM ${t} does not exist on ${d.config.node}`, STEP_HINTS.noTemplate)];
    if (String(c.template ?? "") !== "1") return [failed("template", `VM ${t} exists but is not a template`, VALUE_HINTS.makeTemplate(t))];
    return [ok("template", `template ${t} (${String(c.name ?? "")}) exists`)];
  } catch (e) {
    return [failed("template", `${errorCode(e)}: ${e instanceof Error ? e.message : String(e)}`,
      e instanceof HsError && typeof e.details.hint === "string" ? e.details.hint : STEP_HINTS.seeErrorCode)];
  }
}

async function bridgeExists(d: PreflightDeps): Promise<Check> {
  // GET /nodes/{node}/network is outside the documented API surface (pve-api.md), so ask the host.
  const r = await d.commands(["ip", "link", "show", d.config.bridge], { signal: d.signal });
  if (r.code === 0) return ok("bridge", `bridge ${d.config.bridge} exists (checked with ip link)`);
  return failed("bridge", `bridge ${d.config.bridge} not found: ${r.stderr.trim().split("\n")[0]}`, STEP_HINTS.noBridge);
}

export type StorageAvail = { kib: number } | { error: string };

/**
 * Available KiB on a storage, from PVE's storage status (one API call; bytes,
 * the same storage_info `pvesm status` prints in KiB). When the API cannot say
 * (`apiUp` false: its check failed; or down, not yet pinned, a token without
 * Datastore.Audit on the storage) it is `pvesm status`'s answer instead, as
 * root on this node: a perl start on PVE.
 */
export async function storageAvail(client: PveClient, commands: CommandRunner, node: string, id: string, signal: AbortSignal, apiUp = true): Promise<StorageAvail> {
  if (!apiUp) return storageAvailKiB(commands, id, signal);
  let st;
  try {
    st = await client.api("GET /nodes/{node}/storage/{storage}/status", { node, storage: id }, { signal });
  } catch (e) {
    if (signal.aborted) throw e;
    return storageAvailKiB(commands, id, signal);
  }
  // storage_info leaves an inactive storage at 0 bytes (pvesm prints it "inactive" with zeros).
  if (!isTrue(st.active)) return { error: `storage ${id} is not active on node ${node} (PVE's storage status)` };
  return { kib: Math.floor(Number(st.avail ?? 0) / 1024) };
}

/** A schema boolean: PVE sends 1/0 (perl), or true/false. */
function isTrue(v: unknown): boolean {
  return v === true || v === 1 || v === "1";
}

/** Available KiB on a storage (`pvesm status`), or why pvesm could not say. The API's answer (storageAvail) is asked first. */
async function storageAvailKiB(commands: CommandRunner, id: string, signal: AbortSignal): Promise<StorageAvail> {
  const r = await commands(["pvesm", "status", "--storage", id], { signal });
  const row = r.stdout.split("\n").map((l) => l.trim().split(/\s+/)).find((c) => c[0] === id);
  const kib = Number(row?.[5]);
  if (r.code !== 0 || !row || row.length < 6 || !Number.isFinite(kib)) return { error: `pvesm status for ${id} failed: ${r.stderr.trim().split("\n")[0]}` };
  return { kib };
}

async function diskSpace(d: PreflightDeps, apiUp: boolean): Promise<Check> {
  const id = d.config.storage;
  const st = await (d.storageAvail?.(apiUp) ?? storageAvail(d.client, d.commands, d.config.node, id, d.signal, apiUp));
  if ("error" in st) return failed("disk-space", st.error, VALUE_HINTS.storageStatus(id));
  const availKiB = st.kib;
  const gib = (availKiB / 1024 / 1024).toFixed(1);
  if (!(availKiB >= d.minFreeKiB)) {
    return failed("disk-space", `storage ${id} has ${gib} GiB free; need ${(d.minFreeKiB / 1024 / 1024).toFixed(1)} GiB`, STEP_HINTS.lowDisk);
  }
  return ok("disk-space", `storage ${id} has ${gib} GiB free`);
}
