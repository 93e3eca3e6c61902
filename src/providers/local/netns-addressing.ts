// Naming and addressing of level namespaces: netns and veth names derived from
// the level path, and the /30 slot arithmetic under a /16 base. Pure functions,
// no commands.
// Imported by: src/providers/local.

import { createHash } from "node:crypto";
import { InvalidArgumentError } from "../../domain/errors.js";
import type { Logger } from "../../log/logger.js";
import type { CommandRunner } from "../../util/command-runner.js";

/** Where iproute2 keeps named namespaces; shared by every level (same mount ns). */
export const NETNS_RUN_DIR = "/var/run/netns";
/** A /16 holds 2^14 /30s. */
export const SLOTS_PER_BASE = 16_384;
/** Linux IFNAMSIZ is 16 including the NUL; the veth ends are `<name>p` / `<name>c`. */
export const MAX_NETNS_NAME = 14;
const NAME_RE = /^[a-z0-9][a-z0-9-]*$/;
/** ip commands are local and quick; this bounds a wedged one (a command timeout, not a connect timeout). */
export const DEFAULT_IP_TIMEOUT_MS = 15_000;

/** JSON-safe: the local provider persists it in the parent's journal. */
export interface NetnsHandle {
  readonly nsName: string;
  /** veth end in the creator's (parent's) netns. */
  readonly parentIf: string;
  /** veth end inside nsName. */
  readonly childIf: string;
  /** On parentIf: what the child dials to reach its parent. */
  readonly parentAddr: string;
  /** On childIf: where the parent reaches the child. */
  readonly childAddr: string;
  readonly prefix: 30;
  readonly subnetBase: string;
  /** Which /30 of subnetBase (0..16383). */
  readonly index: number;
}

export interface NetnsCommonOptions {
  signal?: AbortSignal;
  /** Per ip command; default 15 s. */
  commandTimeoutMs?: number;
}

export interface CreateNetnsOptions extends NetnsCommonOptions {
  /** Netns name and veth stem: [a-z0-9-], at most 14 chars, unique across the tree (see levelNetnsName). */
  name: string;
  /** First two octets, e.g. "10.231". */
  subnetBase: string;
  /** Which /30. Omitted: allocateIndex() picks one (stable for the same name/levelPath, see there). */
  index?: number;
  /** Hash key for automatic allocation; defaults to name. */
  levelPath?: string | readonly string[];
  run: CommandRunner;
  log: Logger;
}

// ---------------------------------------------------------------- naming ---

export function validateNetnsName(name: string): void {
  if (name.length === 0 || name.length > MAX_NETNS_NAME || !NAME_RE.test(name)) {
    throw new InvalidArgumentError(`netns name must be 1-${MAX_NETNS_NAME} chars of [a-z0-9-], starting alphanumeric`, {
      details: { name },
    });
  }
}

export function pathKey(levelPath: string | readonly string[]): string {
  return typeof levelPath === "string" ? levelPath : levelPath.join("/");
}

/**
 * A tree-unique netns name from a level path: `<prefix>-<hex>` padded with as
 * much of sha256(path) as fits in 14 chars. Deterministic, so a restarted
 * daemon finds the namespace it made before the crash.
 */
export function levelNetnsName(levelPath: string | readonly string[], prefix = "hsd"): string {
  const hexLen = MAX_NETNS_NAME - prefix.length - 1;
  if (hexLen < 6) throw new InvalidArgumentError("netns name prefix too long (at most 7 chars)", { details: { prefix } });
  const name = `${prefix}-${createHash("sha256").update(pathKey(levelPath)).digest("hex").slice(0, hexLen)}`;
  validateNetnsName(name);
  return name;
}

export function vethNames(name: string): { parentIf: string; childIf: string } {
  validateNetnsName(name);
  return { parentIf: `${name}p`, childIf: `${name}c` };
}

// ---------------------------------------------------------- addressing ---

export function parseBase(subnetBase: string): [number, number] {
  const m = /^(\d{1,3})\.(\d{1,3})$/.exec(subnetBase);
  const a = m ? Number(m[1]) : NaN;
  const b = m ? Number(m[2]) : NaN;
  if (!m || a > 255 || b > 255) {
    throw new InvalidArgumentError('subnetBase must be two octets, e.g. "10.231"', { details: { subnetBase } });
  }
  return [a, b];
}

/**
 * The /30 number `index` of `subnetBase`: index i covers
 * base.(i>>6).((i&63)*4) .. +3; the parent end gets +1, the child +2.
 */
export function slotAddresses(subnetBase: string, index: number): { network: string; parentAddr: string; childAddr: string } {
  const [a, b] = parseBase(subnetBase);
  if (!Number.isInteger(index) || index < 0 || index >= SLOTS_PER_BASE) {
    throw new InvalidArgumentError(`netns /30 index must be 0..${SLOTS_PER_BASE - 1}`, { details: { index } });
  }
  const c = index >> 6;
  const d = (index & 63) * 4;
  return { network: `${a}.${b}.${c}.${d}`, parentAddr: `${a}.${b}.${c}.${d + 1}`, childAddr: `${a}.${b}.${c}.${d + 2}` };
}

/** The /30 index an IPv4 address falls in, or undefined when it is outside subnetBase. */
export function indexOfAddress(subnetBase: string, addr: string): number | undefined {
  const [a, b] = parseBase(subnetBase);
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(addr);
  if (!m || Number(m[1]) !== a || Number(m[2]) !== b) return undefined;
  return (Number(m[3]) << 6) | (Number(m[4]) >> 2);
}

/** The handle a (name, base, index) triple describes; pure, for reconstructing from a journal. */
export function netnsHandle(name: string, subnetBase: string, index: number): NetnsHandle {
  const { parentIf, childIf } = vethNames(name);
  const { parentAddr, childAddr } = slotAddresses(subnetBase, index);
  return { nsName: name, parentIf, childIf, parentAddr, childAddr, prefix: 30, subnetBase, index };
}

/** A level's home slot: sha256(key) mod 16384. Where probing starts. */
export function preferredIndex(key: string): number {
  return createHash("sha256").update(key).digest().readUInt32BE(0) % SLOTS_PER_BASE;
}
