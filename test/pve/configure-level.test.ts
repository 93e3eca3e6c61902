// configurePveLevel against the simulator and its host-command shims (pveum,
// pvecm, sysctl, systemctl, ip): a fresh level gets its token, snippets and a
// sane certificate; a re-run changes nothing; an existing token whose secret
// this level lacks is never recreated.

import { test } from "node:test";
import assert from "node:assert/strict";
import { startSim, clientFor, withSim, rejection } from "./helpers.js";
import { simCommandRunner } from "../pve-sim/sim-commands.js";
import type { PveSim, PveSimOptions } from "../pve-sim/pve-sim.js";
import { configurePveLevel, type ConfigurePveLevelOptions } from "../../src/providers/pve/configure-level.js";
import { HsError } from "../../src/domain/errors.js";


function optionsFor(sim: PveSim, saved: string[], over: Partial<ConfigurePveLevelOptions> = {}) {
  const commands = simCommandRunner(sim);
  const opts: ConfigurePveLevelOptions = {
    commands, tokenId: "root@pam!hsd", apiUrl: sim.url, node: sim.node, hostname: sim.node,
    hostsFile: sim.paths.hostsFile, pveCertFile: sim.paths.certFile, resolveHost: async () => [],
    saveTokenSecret: async (s) => { saved.push(s); }, clientOptions: { proxyRetryBaseMs: 1 },
    signal: AbortSignal.timeout(60_000), ...over,
  };
  return { opts, commands };
}

test("fresh level: token created once and saved, cert and snippets repaired, API answers with the new token", () =>
  withSim({ faults: { certZoneId: true, snippetsDisabled: true } }, async (sim) => {
    sim.tokens.delete("root@pam!hsd"); // a new PVE install has no hsd token
    const saved: string[] = [];
    const { opts, commands } = optionsFor(sim, saved);
    const r = await configurePveLevel(opts);
    assert.deepEqual(r.checks.map((c) => [c.name, c.result]), [
      ["hostname", "repaired"], ["pveproxy-cert", "repaired"], ["token", "repaired"], ["api", "ok"], ["snippets", "repaired"],
    ]);
    assert.equal(saved.length, 1);
    assert.equal(sim.tokens.get("root@pam!hsd"), saved[0]);
    assert.equal(r.tokenCreated, true);
    assert.equal(r.fingerprint, sim.fingerprint, "pinned to the regenerated certificate");
    assert.ok(sim.storages.get("local")!.content.split(",").includes("snippets"));
    // One pveum for the token on a fresh level (a perl start of about half a second on PVE): the add itself.
    assert.deepEqual(commands.calls.filter((c) => c.startsWith("pveum user token")), ["pveum user token add root@pam hsd --privsep 0 --comment hsd --output-format json"]);
    assert.ok(!commands.calls.some((c) => c.includes(saved[0]!)), "the secret is never in a command line");
    const v = await clientFor(sim, { tokenSecret: saved[0]!, fingerprint: r.fingerprint }).api("GET /version", {});
    assert.equal(v.version, "8.3.2");

    // A re-run with the stored secret changes nothing and creates nothing.
    const again = optionsFor(sim, saved, { tokenSecret: saved[0]! });
    const r2 = await configurePveLevel(again.opts);
    assert.deepEqual(r2.checks.map((c) => c.result), ["ok", "ok", "ok", "ok", "ok"]);
    assert.equal(r2.tokenCreated, false);
    assert.equal(saved.length, 1);
    assert.ok(!again.commands.calls.some((c) => c.startsWith("pveum user token add")));
  }));

test("token exists but its secret is not held: PveTokenExists, and the token in use survives", () => withSim({}, async (sim) => {
  const before = sim.tokens.get("root@pam!hsd");
  const saved: string[] = [];
  const { opts, commands } = optionsFor(sim, saved);
  const err = await rejection(configurePveLevel(opts));
  assert.equal(err.code, "PveTokenExists");
  assert.match(String(err.details.hint), /pveum user token remove root@pam hsd/);
  assert.equal(sim.tokens.get("root@pam!hsd"), before);
  assert.deepEqual(saved, []);
  // Asked for at once: PVE refused it ("Token already exists.") and changed nothing.
  assert.deepEqual(commands.calls.filter((c) => c.startsWith("pveum user token")), ["pveum user token add root@pam hsd --privsep 0 --comment hsd --output-format json"]);
}));

test("a stale secret fails the setup with the api check named, not a silent success", () => withSim({}, async (sim) => {
  const { opts } = optionsFor(sim, [], { tokenSecret: "00000000-0000-0000-0000-000000000000" });
  const err = await rejection(configurePveLevel(opts));
  assert.equal(err.code, "PreflightFailed");
  assert.deepEqual(err.details.failed, ["api"]);
  assert.match(String(err.details.hint), /token_secret/);
}));

test("no PVE on the level (no certificate) is a PreflightFailed before any command", () => withSim({}, async (sim) => {
  const { opts, commands } = optionsFor(sim, [], { pveCertFile: `${sim.root}/nope.pem` });
  const err = await rejection(configurePveLevel(opts));
  assert.equal(err.code, "PreflightFailed");
  assert.deepEqual(commands.calls, []);
}));

test("a new token's secret is stored while the API is asked with it; the outcome waits for the store, and a failed store fails the setup", () =>
  withSim({}, async (sim) => {
    sim.tokens.delete("root@pam!hsd");
    // The store finishes only once the API was asked (bounded: a store that never sees it says so).
    const asked = () => sim.requests.some((r) => r.path === "/version");
    let sawApi = false;
    const events: string[] = [];
    const { opts } = optionsFor(sim, [], {
      saveTokenSecret: async () => {
        for (const end = Date.now() + 10_000; !asked() && Date.now() < end;) await new Promise((r) => setTimeout(r, 5));
        sawApi = asked();
        events.push("stored");
      },
      log: (m) => events.push(m.split(":")[0]!),
    });
    await configurePveLevel(opts);
    assert.ok(sawApi, "the API was asked while the secret was being stored");
    assert.deepEqual(events.filter((e) => ["stored", "token", "api"].includes(e)), ["stored", "token", "api"], "nothing reported before the secret was stored");

    sim.tokens.delete("root@pam!hsd");
    const failing = optionsFor(sim, [], { saveTokenSecret: async () => { throw new HsError("disk full"); } });
    await assert.rejects(configurePveLevel(failing.opts), (e: unknown) => e instanceof HsError && e.message === "disk full");
  }));

test("the token's pveum runs while the hostname and certificate are checked; a failed check still stores a new token's secret", () =>
  withSim({}, async (sim) => {
    sim.tokens.delete("root@pam!hsd");
    const saved: string[] = [];
    // The hostname lookup answers only once the token was asked for (bounded: one after the other, it never is).
    let runner: { calls: string[] } | undefined;
    const tokenAsked = () => runner?.calls.some((c) => c.startsWith("pveum user token add")) ?? false;
    let lookedUp = false;
    let sawToken = false;
    const { opts, commands } = optionsFor(sim, saved, {
      hostsFile: `${sim.root}/hosts-without-this-node`,
      resolveHost: async () => {
        lookedUp = true;
        for (const end = Date.now() + 10_000; !tokenAsked() && Date.now() < end;) await new Promise((r) => setTimeout(r, 5));
        sawToken = tokenAsked();
        return [];
      },
    });
    runner = commands;
    const r = await configurePveLevel(opts);
    assert.ok(lookedUp, "the hostname was looked up");
    assert.ok(sawToken, "the token was asked for while the hostname was checked");
    assert.deepEqual(r.checks.map((c) => c.name), ["hostname", "pveproxy-cert", "token", "api", "snippets"]);
    assert.equal(sim.tokens.get("root@pam!hsd"), saved[0]);

    // The check throws after PVE made the token: its secret (shown once) is stored all the same.
    sim.tokens.delete("root@pam!hsd");
    const saved2: string[] = [];
    const broken = optionsFor(sim, saved2, { resolveHost: async () => { throw new HsError("resolver broke"); } });
    const brokenHosts = { ...broken.opts, hostsFile: `${sim.root}/no-such-dir/hosts`, commands: async (...a: Parameters<typeof broken.commands>) => {
      if (a[0][0] === "ip") throw new HsError("ip broke");
      return broken.commands(...a);
    } };
    await assert.rejects(configurePveLevel(brokenHosts), (e: unknown) => e instanceof HsError && e.message === "ip broke");
    assert.equal(saved2.length, 1);
    assert.equal(sim.tokens.get("root@pam!hsd"), saved2[0]);
  }));
