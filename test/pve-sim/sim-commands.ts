// A CommandRunner that acts on the simulator's state the way the real host
// commands act on a PVE node (pvesm, pvecm, pveum, sysctl, systemctl, ip);
// genisoimage is the real one.
// Test-only. Like the real runner, `check` turns a non-zero exit into CommandFailed.

import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { assertSuccess, runCommand, type CommandOptions, type CommandRunner, type CommandResult } from "../../src/util/command-runner.js";
import { SIM_STORAGE_TOTAL_KIB, type PveSim } from "./pve-sim.js";

export type SimCommandRunner = CommandRunner & { readonly calls: string[] };

export function simCommandRunner(sim: PveSim): SimCommandRunner {
  const calls: string[] = [];
  const res = (code: number, stdout = "", stderr = ""): CommandResult => ({ code, stdout, stderr });
  const answer = async (cmd: string, args: readonly string[], opts?: CommandOptions): Promise<CommandResult> => {
      const line = [cmd, ...args].join(" ");
      calls.push(line);
      if (cmd === "pvesm" && args[0] === "set") {
        const s = sim.storages.get(args[1]!);
        const i = args.indexOf("--content");
        if (!s) return res(255, "", `storage '${args[1]}' does not exist\n`);
        if (i >= 0) s.content = args[i + 1]!;
        return res(0);
      }
      if (cmd === "pvesm" && args[0] === "status") {
        const id = args[args.indexOf("--storage") + 1]!;
        const s = sim.storages.get(id);
        if (!s) return res(255, "", `storage '${id}' does not exist\n`);
        const total = SIM_STORAGE_TOTAL_KIB;
        const avail = sim.faults.diskFreeKiB;
        return res(0, `Name             Type     Status           Total            Used       Available        %\n` +
          `${id.padEnd(16)} ${s.type.padEnd(8)} active    ${total}  ${total - avail}  ${avail}   ${((1 - avail / total) * 100).toFixed(2)}%\n`);
      }
      if (line === "sysctl -w net.ipv6.conf.all.disable_ipv6=1") { sim.ipv6Disabled = true; return res(0, "net.ipv6.conf.all.disable_ipv6 = 1\n"); }
      if (line === "sysctl -w net.ipv6.conf.all.disable_ipv6=0") { sim.ipv6Disabled = false; return res(0, "net.ipv6.conf.all.disable_ipv6 = 0\n"); }
      if (line === "pvecm updatecerts --force") {
        // The SAN gets whatever the hostname resolves to first; link-local only while IPv6 is up.
        const first = readFileSync(sim.paths.hostsFile, "utf8").split("\n").map((l) => l.trim().split(/\s+/))
          .find((t) => t.slice(1).includes(sim.node))?.[0] ?? "";
        await sim.installCert(!sim.ipv6Disabled && first.toLowerCase().startsWith("fe80"));
        return res(0, "(re)generate node files\ngenerate new node certificate\nmerge authorized SSH keys\n");
      }
      if (line === "systemctl restart pveproxy") { sim.restartProxy(); return res(0); }
      if (cmd === "ip" && args[0] === "link" && args[1] === "show") {
        const b = args[2]!;
        if (!sim.bridges.has(b)) return res(1, "", `Device "${b}" does not exist.\n`);
        return res(0, `5: ${b}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\n`);
      }
      if (line.startsWith("ip -4 -o addr show dev ")) {
        const b = args[5]!;
        if (!sim.bridges.has(b)) return res(1, "", `Device "${b}" does not exist.\n`);
        return res(0, `5: ${b}    inet ${sim.nodeAddress}/24 brd 10.0.0.255 scope global ${b}\\       valid_lft forever preferred_lft forever\n`);
      }
      const token = pveumToken(sim, args, res);
      if (cmd === "pveum" && token) return token;
      // A PVE node's own tool (qemu-server builds its cloud-init drives with it), acting on real files.
      if (cmd === "genisoimage") return runCommand([cmd, ...args], opts);
      return res(127, "", `${cmd}: command not found\n`);
  };
  const run: CommandRunner = async (argv, opts) => {
    const r = await answer(argv[0]!, argv.slice(1), opts);
    return opts?.check ? assertSuccess(argv, r, opts.label) : r;
  };
  return Object.assign(run, { calls });
}

/** `pveum user token list|add|remove USER [ID] ... --output-format json`, over the sim's token table. */
function pveumToken(sim: PveSim, args: readonly string[], res: (code: number, stdout?: string, stderr?: string) => CommandResult): CommandResult | undefined {
  if (args[0] !== "user" || args[1] !== "token") return undefined;
  const [, , verb, user, id] = args;
  if (!user || !/^[^@\s]+@[^@\s]+$/.test(user)) return res(255, "", "400 Parameter verification failed.\nuserid: invalid format\n");
  const mine = [...sim.tokens.keys()].filter((k) => k.startsWith(`${user}!`)).map((k) => k.slice(user.length + 1));
  if (verb === "list") {
    return res(0, `${JSON.stringify(mine.map((tokenid) => ({ tokenid, privsep: 0, expire: 0, comment: "" })))}\n`);
  }
  if (verb === "add" && id) {
    if (mine.includes(id)) return res(255, "", "400 Parameter verification failed.\ntokenid: Token already exists.\n");
    const value = randomUUID();
    sim.tokens.set(`${user}!${id}`, value);
    const pi = args.indexOf("--privsep");
    const privsep = pi >= 0 ? Number(args[pi + 1]) : 1;
    return res(0, `${JSON.stringify({ "full-tokenid": `${user}!${id}`, info: { privsep, expire: 0 }, value })}\n`);
  }
  if (verb === "remove" && id) {
    if (!sim.tokens.delete(`${user}!${id}`)) return res(255, "", `no such token '${id}' for user '${user}'\n`);
    return res(0);
  }
  return res(255, "", "400 wrong number of arguments\n");
}
