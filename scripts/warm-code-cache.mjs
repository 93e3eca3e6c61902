#!/usr/bin/env node
// Last build step (after bundle-entries and demo-packs): rewrites hsd's V8
// code cache from a real `hsctl nest --depth 2` in a temp root, written by l1
// (a child and a parent) as it exits. bundle-entries' warm run only loads the
// modules, so every function a level first calls in a nest (its SSH client and
// server, gRPC, the sync) was compiled lazily in every new hsd: on the cold
// path of each level (bench/nest.ts). The new cache is the same program's
// compiled code, nothing else; if the nest fails, the warm run's cache stays.
// Usage: node scripts/warm-code-cache.mjs [--dist DIR]

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(new URL("..", import.meta.url).pathname);
const args = process.argv.slice(2);
const dist = resolve(args.includes("--dist") ? args[args.indexOf("--dist") + 1] : join(root, "dist"));
const hsctl = join(dist, "cli", "hsctl.js");
const bundle = join(dist, "daemon", "hsd.bundle.cjs");
if (!existsSync(hsctl) || !existsSync(`${bundle}.cache`)) { console.error("no bundles with code caches in dist: run bundle-entries first"); process.exit(1); }

/** The level whose hsd writes the cache: level 0's one child, which builds a child of its own. */
const WRITER = "l0/l1";
const TIMEOUT_MS = 120_000;

/** The cache's first line names the bundle it was made for, as the program checks it (src/util/run-bundle.ts). */
const { codeCacheStamp } = await import(join(dist, "util", "run-bundle.js"));
const stampOf = (file) => { const st = statSync(file); return codeCacheStamp(st.size, st.mtimeMs); };

/** Every hsd still running under `dir` (each level writes its pid in run/ready.json): SIGKILLed with its process group. */
function killLeftovers(dir) {
  const walk = (d) => {
    let entries = [];
    try { entries = readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name === "ready.json") {
        try {
          const pid = JSON.parse(readFileSync(p, "utf8")).pid;
          if (Number.isInteger(pid) && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)) {
            try { process.kill(-pid, "SIGKILL"); } catch { process.kill(pid, "SIGKILL"); }
          }
        } catch { /* gone, or not ours */ }
      }
    }
  };
  walk(dir);
}

const before = statSync(`${bundle}.cache`).mtimeMs;
const work = mkdtempSync(join(tmpdir(), "hsd-warm-cache-"));
// The user's environment as it is, minus hsd's own settings (a level 0 or socket of theirs must not be
// used) and a service manager's (a build run by a systemd unit: this level 0 must not notify it).
const { withoutSystemdEnv } = await import(join(dist, "util", "systemd-env.js"));
const env = Object.fromEntries(Object.entries(withoutSystemdEnv(process.env)).filter(([k]) => !k.startsWith("HSD_")));
Object.assign(env, { HSD_ROOT: join(work, "l0"), HSD_WRITE_CODE_CACHE: `level:${WRITER}` });
let problem;
try {
  const run = (argv) => spawnSync(process.execPath, [hsctl, ...argv], { env, cwd: work, timeout: TIMEOUT_MS, encoding: "utf8", stdio: ["ignore", "ignore", "pipe"] });
  const nest = run(["nest", "--depth", "2"]);
  if (nest.status !== 0) problem = `hsctl nest exited ${nest.status ?? nest.signal}: ${nest.stderr.trim().split("\n").slice(-3).join(" | ")}`;
  // Stops every level, l1 with a clean exit: that is when it writes the cache.
  const destroy = run(["destroy"]);
  if (!problem && destroy.status !== 0) problem = `hsctl destroy exited ${destroy.status ?? destroy.signal}`;
} finally {
  killLeftovers(work);
  rmSync(work, { recursive: true, force: true });
}
const cache = `${bundle}.cache`;
const written = statSync(cache).mtimeMs > before && readFileSync(cache).subarray(0, 64).toString("latin1").startsWith(stampOf(bundle));
if (!written) {
  console.error(`warm-code-cache: hsd's code cache was not rewritten by a nest (${problem ?? `${WRITER} wrote none`}); it keeps the cache of its warm run`);
}
