// Seeded fuzz targets over hsd's parsers of hostile input: pkt-lines and the
// ref advertisement, the reader's exec string, the SSH transport plugin's
// handling of what a parent sends back, and hsd.yaml. Each target runs n cases
// and returns the failures (input + what was thrown), never throws itself.
// Driven by fuzz-parsers.rel.ts; replay a failure with its seed.

import { EventEmitter } from "node:events";
import { HsError } from "../../../src/domain/errors.js";
import { encodePktLine, parseAdvertisement, parsePktLines, readPkt, FLUSH_PKT } from "../../../src/git/pkt-line.js";
import { parseExecCommand } from "../../../src/ssh/exec-command.js";
import { FetchSession, sshRemoteUrl } from "../../../src/git/ssh-http-plugin.js";
import type { ParentConnection } from "../../../src/ssh/parent-connection.js";
import { parseConfig } from "../../../src/config/load-config.js";
import { PROVIDER_CONFIGS } from "../../../src/providers/registry.js";
import { createLogger } from "../../../src/log/logger.js";
import type { Rng } from "../lib/prng.js";

export interface FuzzResult { cases: number; failures: { input: string; error: string }[]; accepted: number }

const show = (b: Buffer | string) => (typeof b === "string" ? JSON.stringify(b.slice(0, 300)) : b.subarray(0, 200).toString("hex"));
const errText = (e: unknown) => (e instanceof Error ? `${e.constructor.name}: ${e.message}\n${e.stack?.split("\n").slice(1, 4).join("\n")}` : String(e));

function record(res: FuzzResult, input: Buffer | string, e: unknown): void {
  if (res.failures.length < 20) res.failures.push({ input: show(input), error: errText(e) });
  else res.failures.length++; // count without keeping
}

// ---------------------------------------------------------------- pkt-line

const OID = () => "0123456789abcdef".repeat(3).slice(0, 40);
function validAdvertisement(rng: Rng): Buffer {
  const parts: Buffer[] = [];
  const n = rng.int(6);
  for (let i = 0; i < n; i++) {
    const oid = rng.chance(0.9) ? OID() : rng.str(40);
    const ref = rng.pick(["HEAD", "refs/heads/main", "refs/tags/v1^{}", "refs/heads/_working", rng.str(rng.len())]);
    const caps = i === 0 ? `\0${rng.pick(["multi_ack side-band-64k ofs-delta", "", rng.str()])}` : "";
    parts.push(encodePktLine(`${oid} ${ref}${caps}\n`));
  }
  if (rng.chance(0.1)) parts.unshift(encodePktLine(`ERR ${rng.str()}\n`));
  if (rng.chance(0.1)) parts.push(Buffer.from(rng.pick(["0001", "0002", "0003", "fff0", "0004"])));
  parts.push(FLUSH_PKT);
  return Buffer.concat(parts);
}

export function fuzzPktLine(rng: Rng, n: number): FuzzResult {
  const res: FuzzResult = { cases: 0, failures: [], accepted: 0 };
  for (let i = 0; i < n; i++) {
    res.cases++;
    const input = rng.chance(0.3) ? rng.bytes(rng.len(256)) : rng.mutate(validAdvertisement(rng));
    try {
      const pkts = parsePktLines(input);
      parseAdvertisement(pkts);
      for (let off = 0; off < input.length; off += 1 + rng.int(7)) readPkt(input, off);
      res.accepted++;
    } catch (e) {
      if (!(e instanceof HsError && e.code === "GitProtocol")) record(res, input, e);
    }
  }
  return res;
}

// ---------------------------------------------------------------- exec command

const HOSTILE = [
  "git-upload-pack '../../etc/passwd'", "git-upload-pack 'repo; rm -rf /'", "git-upload-pack \"repo'\"",
  "git-upload-pack 'repo'\\''; id'", "git-upload-pack '/etc/passwd'", "git-upload-pack '..'", "git-upload-pack '.git'",
  "git-upload-pack 'a/../../b'", "git-upload-pack $(id)", "git-upload-pack `id`", "git-upload-pack 'x'\n'y'",
  "git-receive-pack 'bootstrap'", "git upload-archive 'bootstrap'", "git-upload-pack '-c core.sshCommand=id'",
  "git-upload-pack '--upload-pack=id'", "git-upload-pack 'bootstrap' --help", "git-upload-pack\t'bootstrap'",
];

export function fuzzExecCommand(rng: Rng, n: number): FuzzResult {
  const res: FuzzResult = { cases: 0, failures: [], accepted: 0 };
  const REPO = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
  for (let i = 0; i < n; i++) {
    res.cases++;
    let input: string;
    switch (rng.int(5)) {
      case 0: input = rng.pick(HOSTILE); break;
      case 3: input = `${rng.pick(["hsd-image ", "hsd-image --head ", "hsd-image --raw ", "hsd-image --raw pve-9 0 "])}${rng.str()}`; break;
      case 1: input = `${rng.pick(["git-upload-pack ", "git upload-pack ", "git-upload-pack  "])}${rng.pick(["'", "\"", ""])}${rng.str()}${rng.pick(["'", "\"", ""])}`; break;
      case 2: input = rng.mutate(Buffer.from(rng.pick(HOSTILE))).toString("latin1"); break;
      default: input = rng.str(rng.len(2048));
    }
    try {
      const cmd = parseExecCommand(input);
      res.accepted++;
      // Accepted names must be plain: no path, quote, shell or option syntax (an image name as much as a repo's).
      const name = cmd.service === "hsd-image" ? cmd.image : cmd.repo;
      if (!REPO.test(name) || name.includes("..") || name.length > 64) record(res, input, new Error(`accepted unsafe name ${JSON.stringify(name)}`));
    } catch (e) {
      if (!(e instanceof HsError && (e.code === "AccessDenied" || e.code === "RepoNotFound" || e.code === "ImageNotFound"))) record(res, input, e);
    }
  }
  return res;
}

// ---------------------------------------------------------------- transport plugin

class FakeChannel extends EventEmitter {
  stderr = new EventEmitter();
  destroyed = false;
  write(): boolean { return true; }
  pause(): this { return this; }
  resume(): this { return this; }
  end(): void {}
  close(): void { this.destroy(); }
  destroy(): void { if (!this.destroyed) { this.destroyed = true; setImmediate(() => this.emit("close")); } }
}

const silent = createLogger({ level: "silent", base: {} });

/** One fetch against a scripted parent: data chunks, stderr, exit code, close. */
async function transportCase(rng: Rng, input: Buffer): Promise<void> {
  const ch = new FakeChannel();
  const chunks: Buffer[] = [];
  for (let off = 0; off < input.length;) { const k = 1 + rng.int(64); chunks.push(input.subarray(off, off + k)); off += k; }
  const stderr = rng.chance(0.3) ? rng.pick(["hsd: no such repo\n", rng.str()]) : "";
  const exit = rng.pick([0, 0, 128, 1, null]);
  const conn = {
    exec: async () => {
      setImmediate(() => {
        for (const c of chunks) { if (ch.destroyed) return; ch.emit("data", c); }
        if (stderr) ch.stderr.emit("data", Buffer.from(stderr));
        ch.emit("exit", exit);
        ch.destroy();
      });
      return ch;
    },
  } as unknown as ParentConnection;
  const s = new FetchSession({ conn, commandTimeoutMs: 60_000, log: silent });
  const url = sshRemoteUrl("127.0.0.1", 2222, "bootstrap");
  try {
    const get = await s.http.request({ url: `${url}/info/refs?service=git-upload-pack`, method: "GET", headers: {} });
    for await (const _ of get.body as AsyncIterable<Uint8Array>) { /* drain */ }
    const post = await s.http.request({ url: `${url}/git-upload-pack`, method: "POST", headers: {}, body: [Buffer.from("0000")] as never });
    for await (const _ of post.body as AsyncIterable<Uint8Array>) { /* drain */ }
  } finally {
    await s.close();
  }
}

export async function fuzzTransport(rng: Rng, n: number): Promise<FuzzResult> {
  const res: FuzzResult = { cases: 0, failures: [], accepted: 0 };
  for (let i = 0; i < n; i++) {
    res.cases++;
    const ad = validAdvertisement(rng);
    const pack = Buffer.concat([encodePktLine("NAK\n"), rng.bytes(rng.len(128))]);
    const input = rng.chance(0.2) ? rng.bytes(rng.len(512)) : rng.chance(0.5) ? rng.mutate(Buffer.concat([ad, pack])) : Buffer.concat([ad, pack]);
    let guard: NodeJS.Timeout | undefined;
    try {
      // A case settles as soon as the scripted channel has closed; 10 s means it hung.
      await Promise.race([
        transportCase(rng, input),
        new Promise((_, rej) => { guard = setTimeout(() => rej(new Error("transport case hung")), 10_000); }),
      ]);
      res.accepted++;
    } catch (e) {
      if (!(e instanceof HsError) || e.code === "Internal") record(res, input, e);
    } finally {
      clearTimeout(guard);
    }
  }
  return res;
}

// ---------------------------------------------------------------- config

const SECTIONS: Record<string, string[]> = {
  level: ["name", "depth"], api: ["socket"],
  ssh: ["host", "port", "advertise_host", "max_upload_packs", "queue_timeout", "upload_pack_timeout", "auth_failure_delay"],
  repos: ["bootstrap", "site-config", "../x", "a b"], repo_names: [], secret_patterns: [],
  parent: ["host", "port", "host_key_fingerprint", "public_key"],
  timeouts: ["connect", "command", "health_poll", "shutdown"],
  budgets: ["preflight", "provision", "boot", "install", "handshake", "sync", "secrets", "configure", "nest"],
  nest: ["provider", "isolation", "max_parallel", "max_depth", "max_width", "subnet_base"],
  secrets: ["pass_down"], sync: ["mode", "debounce"],
  pve: ["url", "node", "token_id", "fingerprint", "storage", "snippet_storage", "template", "bridge", "cores", "memory"],
  log: ["level"],
  homestak: ["root", "layout"], configure: ["steps"],
};

function yamlScalar(rng: Rng): string {
  return rng.pick([
    () => String(rng.int(100000) - 50000), () => `${rng.int(1000)}${rng.pick(["ms", "s", "m", "h", "d", ""])}`,
    () => rng.pick(["-1s", "1e309", ".nan", ".inf", "-.inf", "0x1f", "0o17", "1_000", "999999999999999999999s", "30.5s", "00:01"]),
    () => rng.pick(["true", "false", "null", "~", "yes", "no", "''", "\"\""]),
    () => JSON.stringify(rng.str()), () => `'${rng.str().replace(/'/g, "''")}'`,
    () => rng.pick(["!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1]", "!custom x", "!!timestamp 2001-12-14", "!!str 5", "!!int '7'", "!!float 1"]),
    () => rng.pick(["local", "pve", "netns", "process", "l1", "127.0.0.1", "SHA256:abc", "ssh-ed25519 AAAA x", "https://h:8006", "10.231", "info"]),
    () => "x".repeat(rng.len(4096)),
  ])();
}

function yamlValue(rng: Rng, depth: number): string {
  const ind = "  ".repeat(depth + 1);
  if (depth > 3 || rng.chance(0.6)) return ` ${yamlScalar(rng)}`;
  if (rng.chance(0.3)) return ` [${Array.from({ length: rng.int(4) }, () => yamlScalar(rng)).join(", ")}]`;
  if (rng.chance(0.2)) return ` &a${rng.int(3)} {k: ${yamlScalar(rng)}}`;
  if (rng.chance(0.2)) return ` *a${rng.int(3)}`;
  const keys = Array.from({ length: 1 + rng.int(3) }, () => rng.pick(["name", "__proto__", "constructor", "<<", "host", "x", rng.str(4)]));
  return `\n${keys.map((k) => `${ind}${JSON.stringify(k)}:${yamlValue(rng, depth + 1)}`).join("\n")}`;
}

export function genConfigYaml(rng: Rng): string {
  const lines: string[] = [];
  for (const sec of Object.keys(SECTIONS)) {
    if (!rng.chance(0.4)) continue;
    if (rng.chance(0.15)) { lines.push(`${sec}:${yamlValue(rng, 0)}`); continue; }
    const keys = SECTIONS[sec]!.length ? SECTIONS[sec]! : ["- "];
    lines.push(`${sec}:`);
    for (const k of keys) if (rng.chance(0.4)) lines.push(`  ${k === "- " ? "-" : `${k}:`}${yamlValue(rng, 1)}`);
    if (rng.chance(0.05)) lines.push(`  ${rng.str(6)}: 1`);
  }
  if (rng.chance(0.05)) lines.push(lines[0] ?? "level: {}"); // duplicate key
  if (rng.chance(0.05)) lines.unshift("%YAML 1.1\n---");
  if (rng.chance(0.05)) lines.push("---\nsecond: doc");
  return lines.join("\n");
}

export function fuzzConfig(rng: Rng, n: number): FuzzResult {
  const res: FuzzResult = { cases: 0, failures: [], accepted: 0 };
  for (let i = 0; i < n; i++) {
    res.cases++;
    const text = rng.chance(0.15) ? rng.mutate(Buffer.from(genConfigYaml(rng))).toString("utf8") : rng.chance(0.05) ? rng.str(rng.len(512)) : genConfigYaml(rng);
    try {
      const cfg = parseConfig(text, "fuzz.yaml", { root: "/tmp/hsd-fuzz-root", providers: PROVIDER_CONFIGS });
      res.accepted++;
      if (!Object.isFrozen(cfg) || cfg.timeouts.connectMs > 30_000 || !Number.isFinite(cfg.timeouts.commandMs)) {
        record(res, text, new Error("accepted config breaks an invariant (frozen, connect <= 30 s, finite durations)"));
      }
    } catch (e) {
      if (!(e instanceof HsError && e.code === "ConfigInvalid")) record(res, text, e);
    }
  }
  return res;
}
