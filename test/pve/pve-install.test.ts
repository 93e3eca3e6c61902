// PveProvider.install against the simulator's VMs: each started VM gets a real
// sshd on 127.0.0.1 that authorizes the keys PVE put in its cloud-init config,
// and a root directory standing in for its "/" (test/pve-sim/sim-guest.ts). The
// real bundle (built once) is copied, unpacked, and started by the guest's fake
// systemctl as a real hsd process; install returns what its ready.json says.

import { test, before, after } from "node:test";
import { HSD_V8_FLAGS } from "../../src/config/node-flags.js";
import { codeCacheTaken } from "../helpers/code-cache-probe.js";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { startSim, providerFor, phaseCtx, type Emitted, rejection } from "./helpers.js";
import { buildBundle, type BundleFixture } from "./bundle-fixture.js";
import type { PveSim } from "../pve-sim/pve-sim.js";
import type { PveProviderOptions } from "../../src/providers/pve/pve-provider.js";
import type { ChildInstallSpec } from "../../src/providers/provider.js";
import { HsError } from "../../src/domain/errors.js";

let bundle: BundleFixture;
let keys: { dir: string; priv: string; pub: string; other: string };

before(async () => {
  bundle = await buildBundle();
  const dir = await mkdtemp(join(tmpdir(), "pve-install-keys-"));
  for (const k of ["level", "other"]) execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `hsd@${k}`, "-f", join(dir, k)]);
  keys = { dir, priv: join(dir, "level"), pub: (await readFile(join(dir, "level.pub"), "utf8")).trim(), other: join(dir, "other") };
});
after(async () => {
  await bundle?.close();
  if (keys) await rm(keys.dir, { recursive: true, force: true });
});


function spec(over: Partial<ChildInstallSpec> = {}): ChildInstallSpec {
  return {
    name: "l1", depth: 1, parentHost: "127.0.0.1", parentPort: 2222, parentHostKeyFingerprint: "SHA256:cGFyZW50aG9zdGtleQ",
    parentPublicKey: keys.pub, repoNames: ["bootstrap", "site-config"], extraConfig: { log: { level: "debug" } }, ...over,
  };
}

async function withGuests(fn: (sim: PveSim, opts: Partial<PveProviderOptions>) => Promise<void>): Promise<void> {
  const sim = await startSim({ guests: true, faults: { agentDelayMs: 1000 } });
  try {
    await fn(sim, {
      sshPublicKeys: [keys.pub], sshPrivateKeyPath: keys.priv, bundlePath: bundle.path, childSshPort: 0,
      guestAccess: (vm) => sim.guestAccess(vm.vmid), readyTimeoutMs: 60_000, sshWaitMs: 30_000,
    });
  } finally { await sim.close(); }
}

function alive(pid: number): boolean {
  try {
    const state = /^State:\s+(\w)/m.exec(execFileSync("cat", [`/proc/${pid}/status`], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }))?.[1];
    return state !== undefined && state !== "Z";
  } catch { return false; }
}

test("install: bundle, config, unit and a running hsd on the VM; endpoint from its ready.json; destroy powers it off", () =>
  withGuests(async (sim, over) => {
    const { provider } = providerFor(sim, over);
    const events: Emitted[] = [];
    const ctx = phaseCtx(events);
    const booted = await provider.boot(await provider.provision("l1", 1, ctx), ctx);
    const vmid = Number(booted.data.vmid);
    const root = sim.guestRoot(vmid);

    const { handle, endpoint } = await provider.install(booted, spec(), ctx);

    const ready = JSON.parse(await readFile(join(root, "var/lib/hsd/run/ready.json"), "utf8")) as { pid: number; sshPort: number; hostKeyFingerprint: string; publicKey: string };
    assert.match(ready.publicKey, /^ssh-ed25519 /);
    assert.deepEqual(endpoint, { host: "127.0.0.1", port: ready.sshPort, hostKeyFingerprint: ready.hostKeyFingerprint, publicKey: ready.publicKey });
    assert.ok(alive(ready.pid), "the child's hsd runs");
    const guestSshd = await sim.guestAccess(vmid);
    assert.equal(handle.data.vmid, vmid);
    assert.equal(handle.data.address, sim.guestAddress(vmid));
    assert.match(String(handle.data.sshHostKey), /^SHA256:/);
    assert.ok(guestSshd.port > 0);

    const cfgPath = join(root, "etc/homestak/hsd.yaml");
    assert.equal((await stat(cfgPath)).mode & 0o777, 0o600);
    const cfg = parse(await readFile(cfgPath, "utf8")) as Record<string, any>;
    assert.deepEqual(cfg.level, { name: "l1", depth: 1 });
    assert.deepEqual(cfg.ssh, { host: "0.0.0.0", port: 0, advertise_host: sim.guestAddress(vmid) });
    assert.equal(cfg.parent.host, "127.0.0.1");
    assert.equal(cfg.nest.provider, "pve");
    assert.equal(cfg.pve.url, "https://127.0.0.1:8006");
    assert.equal(cfg.pve.node, "l1");
    assert.equal(cfg.log.level, "debug");
    assert.equal(await readFile(join(root, "etc/systemd/system/hsd.service"), "utf8"), await readFile(new URL("../../daemon/hsd.service", import.meta.url), "utf8"));
    assert.match(await readFile(join(root, "usr/local/bin/hsd"), "utf8"), new RegExp(`exec ${root}/opt/hsd/bin/node ${root}/opt/hsd/bin/hsd.js`));
    assert.ok((await stat(join(root, "opt/hsd/hsd-bundle.tar.gz"))).size > 0, "the child keeps the bundle for its own children");
    assert.ok((await stat(join(root, "opt/hsd/dist/daemon/hsd.js"))).isFile());
    // The programs come as their esbuild bundles (and code caches); node_modules stays behind.
    assert.ok((await stat(join(root, "opt/hsd/dist/daemon/hsd.bundle.cjs"))).isFile());
    // hsctl runs from hsd's bundle: the launcher the install wrote works, and hsctl's own bundle was never copied.
    const child = spawnSync(join(root, "usr/local/bin/hsctl"), ["--help"], { encoding: "utf8", timeout: 60_000 });
    assert.equal(child.status, 0, child.stderr);
    assert.match(child.stdout, /^hsctl /);
    await assert.rejects(stat(join(root, "opt/hsd/dist/cli")));
    await assert.rejects(stat(join(root, "opt/hsd/node_modules")));
    assert.deepEqual((await readFile(join(root, "systemctl.log"), "utf8")).trim().split("\n").filter((l) => !l.includes("is-failed")), [
      "systemctl stop apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service",
      // The simulator's systemctl answers no `show`: the install reloads, as for a unit systemd holds as not found.
      "systemctl show -p LoadState -p NeedDaemonReload hsd", "systemctl daemon-reload", "systemctl enable --no-reload hsd", "systemctl restart hsd",
    ]);
    assert.ok(events.some((e) => e.kind === "log" && /hsd .* is running on the child/.test(e.message ?? "")));

    // A second install (phase re-run) pins the host key it learned and restarts hsd with the new files.
    const again = await provider.install(handle, spec(), ctx);
    const ready2 = JSON.parse(await readFile(join(root, "var/lib/hsd/run/ready.json"), "utf8")) as { pid: number; sshPort: number };
    assert.notEqual(ready2.pid, ready.pid);
    assert.equal(again.endpoint.port, ready2.sshPort);
    assert.equal(again.handle.data.sshHostKey, handle.data.sshHostKey);

    await provider.destroy(again.handle, ctx);
    await sim.settled();
    assert.equal(alive(ready2.pid), false, "power-off killed the child's hsd");
    assert.equal(sim.vms.has(vmid), false);
  }));

test("install: a key the VM does not authorize ends with AccessDenied within the SSH wait bound", () =>
  withGuests(async (sim, over) => {
    const { provider } = providerFor(sim, { ...over, sshPrivateKeyPath: keys.other, sshWaitMs: 1500 });
    const ctx = phaseCtx();
    const booted = await provider.boot(await provider.provision("l1", 1, ctx), ctx);
    const err = await rejection(provider.install(booted, spec(), ctx));
    assert.equal(err.code, "AccessDenied");
    assert.match(String(err.details.hint), /cloud-init/);
  }));

test("install: a child hsd that cannot start (invalid config) fails the phase at once, not at the bound", () =>
  withGuests(async (sim, over) => {
    const { provider } = providerFor(sim, { ...over, readyTimeoutMs: 120_000 });
    const ctx = phaseCtx();
    const booted = await provider.boot(await provider.provision("l1", 1, ctx), ctx);
    const err = await rejection(provider.install(booted, spec({ extraConfig: { no_such_key: 1 } }), { ...ctx, signal: AbortSignal.timeout(60_000) }));
    assert.equal(err.code, "ProviderFailed");
    assert.equal(err.details.step, "ready");
    assert.match(await readFile(join(sim.guestRoot(Number(booted.data.vmid)), "var/log/hsd.log"), "utf8"), /ConfigInvalid|no_such_key/);
  }));

test("install: missing bundle and missing key are ProviderFailed with a hint, before any SSH", () =>
  withGuests(async (sim, over) => {
    const ctx = phaseCtx();
    const { provider } = providerFor(sim, { ...over, bundlePath: join(keys.dir, "nope.tgz") });
    const booted = await provider.boot(await provider.provision("l1", 1, ctx), ctx);
    const noBundle = await rejection(provider.install(booted, spec(), ctx));
    assert.equal(noBundle.code, "ProviderFailed");
    assert.match(String(noBundle.details.hint), /bundle\.mjs/);
    const { provider: keyless } = providerFor(sim, { ...over, sshPrivateKeyPath: undefined });
    const noKey = await rejection(keyless.install(booted, spec(), ctx));
    assert.equal(noKey.code, "ProviderFailed");
    assert.match(String(noKey.details.hint), /sshPrivateKeyPath/);
    assert.equal(await readFile(join(sim.guestRoot(Number(booted.data.vmid)), "systemctl.log"), "utf8").catch(() => ""), "");
  }));

test("bundle: unpacked on a child, hsd's code cache is taken under its V8 flags, and hsctl runs from the same bundle", async () => {
  // tar keeps whole seconds of an mtime: a cache stamped for the built file's mtime was refused on
  // every child, and each child hsd parsed its 3 MB bundle again.
  const dir = await mkdtemp(join(tmpdir(), "pve-bundle-unpacked-"));
  try {
    execFileSync("tar", ["-xzf", bundle.path, "-C", dir]);
    const taken = (program: string, flags: readonly string[]) => codeCacheTaken(join(dir, "dist/util/run-bundle.js"), join(dir, program), flags);
    assert.equal(taken("dist/daemon/hsd.bundle.cjs", HSD_V8_FLAGS), true);
    // One bundle for both programs: hsctl's own is not in it (about a third of the bytes every install moves).
    assert.equal(existsSync(join(dir, "dist/cli")), false);
    const hsctlHelp = spawnSync(process.execPath, [join(dir, "bin/hsctl.js"), "--help"], { encoding: "utf8", timeout: 60_000 });
    assert.equal(hsctlHelp.status, 0, hsctlHelp.stderr);
    assert.match(hsctlHelp.stdout, /^hsctl /);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
