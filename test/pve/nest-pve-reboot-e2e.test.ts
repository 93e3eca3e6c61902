// Reboots of a PVE level at the bottom of its tree, on simulated PVE nodes run
// by real processes (pve-tree.ts, sim-reboot.ts: a reboot kills every process
// of the VM and boots it again, its disk kept, its enabled hsd started):
// - `hsctl nest --depth 1 --provider pve` with `pve.image: debian-13`: l1 has
//   no children to build, and its image lacks PVE; its configure installs PVE
//   with the reboot inside it, as a level with children does;
// - then `hsctl sync --configure` re-runs l1's steps, and one asks for a
//   reboot: l0 waits for l1's hsd to come back and re-attaches to the
//   configure l1 resumed at boot; the sync ends with l1's configure finished;
// - again, with the step running `systemctl reboot` itself and sleeping until
//   it is killed (homestak's pve-config): l1's hsd, stopped while the VM says
//   `stopping`, journals the step rebooting and announces it; the same wait.
// Needs root.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hsctl, jsonLines } from "../helpers/hsctl.js";
import { startPveTree, type PveTree } from "./pve-tree.js";

let tree: PveTree;
let flags: string;
before(async () => {
  // Seen by the step inside the VM: its mount namespace overlays /etc, /opt, /usr/local and /var/lib only.
  flags = await mkdtemp(join(tmpdir(), "hsd-pve-reboot-flags-"));
  const KERNEL = [
    // As homestak's pve-config does: reboot the machine itself, then wait to be killed.
    `if [ -e "${flags}/self-reboot" ] && [ "$HSD_STEP_REBOOTS" = 0 ]; then echo "rebooting the machine myself"; systemctl reboot & exec sleep 300; fi`,
    `if [ -e "${flags}/reboot" ] && [ "$HSD_STEP_REBOOTS" = 0 ]; then echo "asking for a reboot"; echo "boot the new kernel" > "$HSD_REBOOT_REQUEST"; exit 0; fi`,
    `echo "kernel step done after reboot $HSD_STEP_REBOOTS"`,
  ].join("\n");
  tree = await startPveTree({
    depth: 1, prefix: "hsd-pve-reboot-", images: [{ name: "debian-13", bytes: 1 << 20 }], image: "debian-13", presetTemplates: "none",
    simOptions: () => ({ imagesWithoutPve: ["debian-13"] }),
    extraConfig: { configure: { steps: [{ name: "kernel", run: ["sh", "-c", KERNEL], when: { min_depth: 1 } }] } },
  });
});
after(async () => { await tree?.close(); await rm(flags, { recursive: true, force: true }); });

/** l1's configure in a stream: started once, `rebooting` naming `reboot`, l0's wait and re-attach after it, then `resumed` (the step's output) after that, finished last. */
function assertOneConfigureWithReboot(stdout: string, reboot: RegExp, resumed: RegExp): void {
  const ev = jsonLines(stdout);
  assert.ok(!ev.some((e) => e.kind === "failed"), ev.filter((e) => e.kind === "failed").map((e) => JSON.stringify(e)).join("\n"));
  const c = ev.filter((e) => e.level === "l0/l1" && e.phase === "configure");
  const kinds = c.map((e) => e.kind);
  assert.equal(kinds.filter((k) => k === "started").length, 1, kinds.join(","));
  const at = (re: RegExp, kind = "log") => c.findIndex((e) => e.kind === kind && re.test(e.message ?? ""));
  const order = [at(reboot, "rebooting"), at(/^l1 is rebooting; waiting for its hsd to come back$/), at(/^l1 is back after .* re-attaching to its configure$/), at(resumed)];
  assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!)), `out of order ${JSON.stringify(order)}:\n${c.map((e) => `${e.kind} ${e.message}`).join("\n")}`);
  assert.equal(kinds.filter((k) => k === "rebooting").length, 1, kinds.join(","));
  assert.equal(kinds.at(-1), "finished");
}

test("nest --depth 1 --provider pve from debian-13: the bottom level installs PVE with its reboot inside its one configure", async () => {
  const r = await hsctl(["nest", "--depth", "1", "--provider", "pve", "--json"], tree.env, 200_000);
  assert.equal(r.code, 0, `nest failed: ${r.stderr}\n${tree.sims.flatMap((s) => s.guestErrors).join("\n")}\n${r.stdout.slice(-4000)}`);
  assertOneConfigureWithReboot(r.stdout, /^step pve-install: ensure_pve: boot the PVE kernel$/, /pve-install\| ensure_pve: proxmox-ve installed after reboot 1/);
  const ev = jsonLines(r.stdout);
  assert.ok(ev.some((e) => e.level === "l0/l1" && e.phase === "configure" && /token: repaired - created root@pam!hsd/.test(e.message ?? "")), "l1 set itself up as a node after the install");
  assert.ok(ev.some((e) => e.level === "l0/l1" && e.phase === "nest" && e.kind === "finished"));
});

test("sync --configure: a step's reboot at l1 (a VM on PVE) is waited for, and l0 re-attaches to l1's resumed configure", async () => {
  await writeFile(join(flags, "reboot"), "");
  const r = await hsctl(["sync", "--configure", "--json"], tree.env, 200_000);
  assert.equal(r.code, 0, `sync failed: ${r.stderr}\n${r.stdout.slice(-4000)}`);
  assertOneConfigureWithReboot(r.stdout, /^step kernel: boot the new kernel$/, /kernel\| kernel step done after reboot 1/);
});

test("sync --configure: a step that runs `systemctl reboot` itself on l1's VM is that reboot: announced, waited for, resumed", async () => {
  await rm(join(flags, "reboot"));
  await writeFile(join(flags, "self-reboot"), "");
  const r = await hsctl(["sync", "--configure", "--json"], tree.env, 200_000);
  assert.equal(r.code, 0, `sync failed: ${r.stderr}\n${r.stdout.slice(-4000)}`);
  assertOneConfigureWithReboot(r.stdout, /^step kernel: the system is rebooting/, /kernel\| kernel step done after reboot 1/);
});
