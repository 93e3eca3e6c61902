// Network-namespace isolation for the `local` provider (`--isolation netns`):
// each child level gets its own netns joined to its parent's by a veth pair on
// a private /30, so it reaches its parent only by a routed address, as a VM
// would. All commands go through an injected CommandRunner, executed in the
// CALLER's netns.
// Imported by: src/providers/local.

// Why nsenter and not `ip netns exec` (see execPrefix): `ip netns exec` (and
// `ip -n`) also unshares the mount namespace and marks / as a recursive slave.
// A level-1 hsd started that way that runs `ip netns add L2` bind-mounts L2
// into its private mount ns only: the host sees an empty, unusable
// /var/run/netns/L2 ("Invalid argument"), cannot list or clean L2 up, and L2
// vanishes with level 1's mount ns. `nsenter --net=` switches only the netns,
// so every level shares the host's mount ns and /var/run/netns stays one
// namespace registry for the whole tree.

import { randomBytes } from "node:crypto";
import { NetnsError } from "../../domain/errors.js";
import type { Logger } from "../../log/logger.js";
import { firstLine, prefixedRunner, runCommand, type CommandRunner } from "../../util/command-runner.js";
import {
  NETNS_RUN_DIR, SLOTS_PER_BASE, indexOfAddress, netnsHandle, parseBase, pathKey,
  preferredIndex, validateNetnsName, vethNames, type CreateNetnsOptions, type NetnsCommonOptions, type NetnsHandle,
} from "./netns-addressing.js";
import { Ip, waitFor, type IpLink } from "./ip-command.js";
import { SerialQueue } from "../../util/serial-queue.js";

export * from "./netns-addressing.js";

// Creations by one daemon are serialized: allocation reads the addresses in
// use and then claims one, so two concurrent creations could otherwise pick
// the same /30. Different daemons own different namespaces (see allocateIndex).
const creations = new SerialQueue();
const serialized = <T>(fn: () => Promise<T>): Promise<T> => creations.run(fn);

// ----------------------------------------------------------- allocation ---

/**
 * The /30 indexes of subnetBase already configured in the caller's netns and,
 * when allNamespaces, in every namespace listed in /var/run/netns.
 */
export async function usedIndexes(
  subnetBase: string,
  run: CommandRunner,
  opts: NetnsCommonOptions & { allNamespaces?: boolean } = {},
): Promise<Set<number>> {
  const ip = new Ip(run, opts, "(allocation)");
  const used = new Set<number>();
  const add = (addrs: string[]) => {
    for (const a of addrs) {
      const i = indexOfAddress(subnetBase, a);
      if (i !== undefined) used.add(i);
    }
  };
  add(await ip.allAddrs());
  if (opts.allNamespaces ?? true) {
    for (const ns of await ip.netnsNames()) {
      // A namespace may vanish or be a stale file; it holds no addresses then.
      const res = await ip.raw(["-j", "-4", "addr", "show"], ns);
      if (res.code !== 0) continue;
      try {
        add((JSON.parse(res.stdout) as IpLink[]).flatMap((l) => (l.addr_info ?? []).map((x) => x.local)));
      } catch { /* unparseable: treat as empty */ }
    }
  }
  return used;
}

/**
 * Picks the /30 for a new child level.
 *
 * Scheme: start at preferredIndex(levelPath) (a hash, so a level has a stable
 * home slot no matter who else exists) and probe upward, wrapping, to the
 * first index whose addresses are not configured anywhere visible. Why not
 * depth/sibling numbering: the tree's fan-out and depth are unbounded and each
 * level is numbered by a different daemon with no shared counter; a
 * positional layout either overflows 14 bits or reserves space nobody uses.
 *
 * Why this is collision-free where it matters: a /30 only has to be unique
 * within each namespace, and a level's namespace holds exactly its uplink
 * (made by its parent before it started) and its children's downlinks (made
 * by itself, serialized in-process). The caller's own netns is always
 * scanned, so those never overlap. Scanning every other named namespace too
 * makes addresses tree-unique in practice (good for logs and debugging); a
 * race between daemons in different subtrees can at worst duplicate a /30 in
 * two namespaces that never see each other, which routes fine.
 *
 * Resume: if `name`'s parent veth end already carries a /30 of subnetBase, that
 * index is returned, so re-running after a crash yields the same shape.
 */
export async function allocateIndex(opts: {
  name: string;
  subnetBase: string;
  levelPath?: string | readonly string[];
  run: CommandRunner;
  allNamespaces?: boolean;
} & NetnsCommonOptions): Promise<number> {
  const { parentIf } = vethNames(opts.name);
  parseBase(opts.subnetBase);
  const ip = new Ip(opts.run, opts, opts.name);
  if (await ip.link(parentIf)) {
    for (const a of await ip.addrs(parentIf)) {
      const i = indexOfAddress(opts.subnetBase, a.local);
      if (i !== undefined && a.prefixlen === 30) return i;
    }
  }
  const used = await usedIndexes(opts.subnetBase, opts.run, opts);
  const start = preferredIndex(opts.levelPath === undefined ? opts.name : pathKey(opts.levelPath));
  for (let k = 0; k < SLOTS_PER_BASE; k++) {
    const i = (start + k) % SLOTS_PER_BASE;
    if (!used.has(i)) return i;
  }
  throw new NetnsError(`no free /30 left in ${opts.subnetBase}.0.0/16`, { details: { subnetBase: opts.subnetBase, nsName: opts.name } });
}

// -------------------------------------------------------------- create ---

/**
 * Creates (or finds and completes) a level's netns and its veth pair to the
 * caller's netns. Convergent: each step checks before acting, so a re-run after
 * a crash at any point finishes the job; an existing namespace of the same
 * shape is reused as is. A different shape (other addresses, a veth whose peer
 * is elsewhere) is a NetnsError, never silently re-plumbed: a running child
 * may depend on it.
 */
export async function createLevelNetns(opts: CreateNetnsOptions): Promise<NetnsHandle> {
  validateNetnsName(opts.name);
  parseBase(opts.subnetBase);
  return await serialized(async () => {
    const index = opts.index ?? (await allocateIndex({ ...opts }));
    const h = netnsHandle(opts.name, opts.subnetBase, index);
    const log = opts.log.child({ netns: h.nsName });
    const ip = new Ip(opts.run, opts, h.nsName);
    let changed = false;

    // 1. The namespace, and that it is a live one (a stale file from a
    //    namespace mounted in another mount ns lists but cannot be entered).
    let present = (await ip.netnsNames()).includes(h.nsName);
    if (present && !(await ip.usable(h.nsName))) {
      log.warn("netns file exists but is not a usable namespace; recreating");
      await ip.ok("ip netns del (stale)", ["netns", "del", h.nsName], undefined, /No such file/);
      present = false;
    }
    if (!present) {
      await ip.ok("ip netns add", ["netns", "add", h.nsName], undefined, /File exists/);
      changed = true;
    }

    // 2. The veth pair: parent end here, child end inside the namespace.
    let parent = await ip.link(h.parentIf);
    const child = await ip.link(h.childIf, h.nsName);
    if (parent && child) {
      const paired = parent.linkinfo?.info_kind === "veth" && parent.link_index === child.ifindex &&
        child.link_index === parent.ifindex && parent.link_netnsid !== undefined;
      if (!paired) {
        throw ip.fail("veth check", `${h.parentIf} here and ${h.childIf} in the namespace are not one veth pair`);
      }
    } else if (parent) {
      // Same name but its peer is not in our namespace: someone else's link.
      throw ip.fail("veth check", `${h.parentIf} exists but its peer is not ${h.childIf} in ${h.nsName}`);
    } else if (child) {
      throw ip.fail("veth check", `${h.childIf} exists in ${h.nsName} but its peer is not ${h.parentIf} in the caller's namespace (created from another namespace?)`);
    } else {
      await ip.ok("ip link add veth", ["link", "add", h.parentIf, "type", "veth", "peer", "name", h.childIf, "netns", h.nsName]);
      parent = await ip.link(h.parentIf);
      if (!parent) throw ip.fail("ip link add veth", `${h.parentIf} missing right after creation`);
      changed = true;
    }

    // 3. Addresses: exactly our /30 on each end.
    for (const [ifname, addr, ns] of [[h.parentIf, h.parentAddr, undefined], [h.childIf, h.childAddr, h.nsName]] as const) {
      const have = await ip.addrs(ifname, ns);
      const others = have.filter((a) => !(a.local === addr && a.prefixlen === 30));
      if (others.length > 0) {
        throw new NetnsError(`netns ${h.nsName}: ${ifname} carries ${others.map((a) => `${a.local}/${a.prefixlen}`).join(", ")}, expected only ${addr}/30 (different index than before?)`, {
          details: { nsName: h.nsName, step: "address check", ifname, expected: `${addr}/30`, found: others.map((a) => `${a.local}/${a.prefixlen}`) },
        });
      }
      if (have.length === 0) {
        await ip.ok(`ip addr add ${ifname}`, ["addr", "add", `${addr}/30`, "dev", ifname], ns, /File exists/);
        changed = true;
      }
    }

    // 4. Links up, including the child's loopback (its hsd listens on 127.0.0.1 for hsctl-style tools).
    await ip.ok("ip link set lo up", ["link", "set", "dev", "lo", "up"], h.nsName);
    await ip.ok(`ip link set ${h.childIf} up`, ["link", "set", "dev", h.childIf, "up"], h.nsName);
    await ip.ok(`ip link set ${h.parentIf} up`, ["link", "set", "dev", h.parentIf, "up"]);
    await waitForOperUp(ip, h, opts);

    log.info({ parentIf: h.parentIf, parentAddr: h.parentAddr, childAddr: h.childAddr, index: h.index, reused: !changed },
      changed ? "netns ready" : "netns reused");
    return h;
  });
}

/** A veth reports UP once both ends are up; the route on the /30 exists from then on. */
async function waitForOperUp(ip: Ip, h: NetnsHandle, opts: NetnsCommonOptions): Promise<void> {
  await waitFor("veth operstate UP", h.nsName, 5_000, async () => {
    const [p, c] = await Promise.all([ip.link(h.parentIf), ip.link(h.childIf, h.nsName)]);
    return p?.operstate === "UP" && c?.operstate === "UP";
  }, opts.signal);
}

// ----------------------------------------------------------- execution ---

/**
 * argv prefix that runs a command inside the namespace: only the netns
 * changes (see header for why not `ip netns exec`). Side effect worth knowing:
 * /sys/class/net inside still shows the caller's interfaces (sysfs is not
 * remounted); use netlink (`ip`, os.networkInterfaces()) for the truth.
 */
export function execPrefix(nsName: string): string[] {
  validateNetnsName(nsName);
  return ["nsenter", `--net=${NETNS_RUN_DIR}/${nsName}`, "--"];
}

/** A runner whose commands run inside nsName: a level's hsd uses the real runner; tests and tools use this. */
export function runnerInNetns(run: CommandRunner, nsName: string): CommandRunner {
  return prefixedRunner(run, execPrefix(nsName));
}

export async function listNetns(run: CommandRunner, prefix = "", opts: NetnsCommonOptions = {}): Promise<string[]> {
  return (await new Ip(run, opts, "(list)").netnsNames()).filter((n) => n.startsWith(prefix));
}

// ------------------------------------------------------------- destroy ---

/**
 * Removes a level's namespace: stops every process in it (TERM, then KILL),
 * deletes the veth pair, deletes the namespace, and waits until the parent end
 * is really gone (the kernel tears a netns down asynchronously). Idempotent: a
 * missing namespace or link is done. Child levels' own namespaces are separate
 * and must be destroyed first (the engine tears down deepest-first).
 */
export async function destroyLevelNetns(
  target: NetnsHandle | string,
  run: CommandRunner,
  log: Logger,
  opts: NetnsCommonOptions & { graceMs?: number } = {},
): Promise<void> {
  const nsName = typeof target === "string" ? target : target.nsName;
  const { parentIf, childIf } = typeof target === "string" ? vethNames(target) : target;
  validateNetnsName(nsName);
  const ip = new Ip(run, opts, nsName);
  const l = log.child({ netns: nsName });
  const present = (await ip.netnsNames()).includes(nsName);

  if (present) {
    await killNetnsProcesses(ip, nsName, opts.graceMs ?? 5_000, l, opts.signal);
    // Deleting either end of a veth deletes both; from inside covers the case
    // where the parent end is not in the caller's namespace.
    if (await ip.usable(nsName)) {
      await ip.ok(`ip link del ${childIf}`, ["link", "del", "dev", childIf], nsName, /does not exist|Cannot find device/);
    }
  }
  await ip.ok(`ip link del ${parentIf}`, ["link", "del", "dev", parentIf], undefined, /does not exist|Cannot find device/);
  if (present) await ip.ok("ip netns del", ["netns", "del", nsName], undefined, /No such file/);
  await waitFor(`${parentIf} removed`, nsName, 10_000, async () => (await ip.link(parentIf)) === undefined, opts.signal);
  l.info(present ? "netns destroyed" : "netns already absent");
}

async function killNetnsProcesses(ip: Ip, nsName: string, graceMs: number, log: Logger, signal?: AbortSignal): Promise<void> {
  const send = (pids: number[], sig: NodeJS.Signals) => {
    for (const pid of pids) {
      if (pid === process.pid) continue; // never ourselves, whatever ip says
      try { process.kill(pid, sig); } catch { /* ESRCH: already gone */ }
    }
  };
  let pids = await ip.pids(nsName);
  if (pids.length === 0) return;
  log.info({ pids }, "stopping processes left in netns");
  send(pids, "SIGTERM");
  const gone = async () => (pids = await ip.pids(nsName)).length === 0;
  try {
    await waitFor("processes exited after SIGTERM", nsName, graceMs, gone, signal);
    return;
  } catch (e) {
    if (!(e instanceof NetnsError)) throw e;
  }
  log.warn({ pids }, "processes ignored SIGTERM; sending SIGKILL");
  send(pids, "SIGKILL");
  await waitFor("processes exited after SIGKILL", nsName, 5_000, gone, signal);
}

// ------------------------------------------------------------ partition ---

/** Cuts the link between parent and child (takes the parent end down; the child end loses carrier). */
export async function linkDown(handle: NetnsHandle, run: CommandRunner, log?: Logger, opts: NetnsCommonOptions = {}): Promise<void> {
  const ip = new Ip(run, opts, handle.nsName);
  await ip.ok(`ip link set ${handle.parentIf} down`, ["link", "set", "dev", handle.parentIf, "down"]);
  await waitFor("veth operstate DOWN", handle.nsName, 5_000, async () => (await ip.link(handle.parentIf))?.operstate === "DOWN", opts.signal);
  log?.info({ netns: handle.nsName, parentIf: handle.parentIf }, "netns link down");
}

/** Restores a link cut by linkDown; resolves once both ends are operationally UP again. */
export async function linkUp(handle: NetnsHandle, run: CommandRunner, log?: Logger, opts: NetnsCommonOptions = {}): Promise<void> {
  const ip = new Ip(run, opts, handle.nsName);
  await ip.ok(`ip link set ${handle.parentIf} up`, ["link", "set", "dev", handle.parentIf, "up"]);
  await waitForOperUp(ip, handle, opts);
  log?.info({ netns: handle.nsName, parentIf: handle.parentIf }, "netns link up");
}

// ------------------------------------------------------------ preflight ---

/**
 * Can this process use `--isolation netns`? Root, iproute2 and nsenter
 * present, and a throwaway namespace with a veth can really be made and
 * entered (containers often allow the first and refuse the rest).
 */
export async function canUseNetns(run: CommandRunner = runCommand): Promise<{ ok: boolean; reason?: string }> {
  const uid = process.getuid?.();
  if (uid !== 0) return { ok: false, reason: `netns isolation needs root (running as uid ${uid ?? "unknown"})` };
  const tryRun = async (argv: string[]) => {
    try {
      return await run(argv, { timeoutMs: 10_000 });
    } catch (e) {
      return { code: -1, stdout: "", stderr: e instanceof Error ? e.message : String(e) };
    }
  };
  if ((await tryRun(["ip", "-V"])).code !== 0) return { ok: false, reason: "iproute2 `ip` is not installed or not runnable" };
  if ((await tryRun(["nsenter", "--version"])).code !== 0) return { ok: false, reason: "nsenter (util-linux) is not installed or not runnable" };

  const name = `hsdq${randomBytes(4).toString("hex")}`;
  const { parentIf, childIf } = vethNames(name);
  try {
    const add = await tryRun(["ip", "netns", "add", name]);
    if (add.code !== 0) return { ok: false, reason: `cannot create a network namespace: ${firstLine(add.stderr)}` };
    const veth = await tryRun(["ip", "link", "add", parentIf, "type", "veth", "peer", "name", childIf, "netns", name]);
    if (veth.code !== 0) return { ok: false, reason: `cannot create a veth pair: ${firstLine(veth.stderr)}` };
    const enter = await tryRun([...execPrefix(name), "ip", "link", "show", "dev", childIf]);
    if (enter.code !== 0) return { ok: false, reason: `cannot enter a network namespace: ${firstLine(enter.stderr)}` };
    return { ok: true };
  } finally {
    await tryRun(["ip", "link", "del", "dev", parentIf]);
    await tryRun(["ip", "netns", "del", name]);
  }
}
