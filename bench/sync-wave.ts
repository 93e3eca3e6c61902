// Sync-wave benchmark: a depth-3 tree of real hsd processes (local provider),
// one small commit at level 0, then `hsctl sync`: the time from its start to
// the last level reporting the new commit, and each level's own latency (its
// sync's duration, and when its report arrived). Also the unchanged-tree sync.
// Goals: <= 250 ms per level; each level's own sync <= 1.5x the baseline
// (issue 15, "per hop"). Baseline in the same run: the git CLI fetching that
// commit from level 0's endpoint over OpenSSH (one hop, its connection included).
// Run: npm run bench -- sync-wave   (needs `npm run build`; uses dist/).

import { mkdtemp, rm, writeFile, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { addCommit } from "../src/demo/demo-repos.js";
import { median } from "./lib/median.js";

const HSCTL = fileURLToPath(new URL("../dist/cli/hsctl.js", import.meta.url));
const ROUNDS = 3;
const REPO = "iac-driver";

interface Proc { code: number; stdout: string; stderr: string }

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, onLine?: (line: string, t: number) => void, cwd?: string): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let buf = "";
    c.stdout.setEncoding("utf8").on("data", (b: string) => {
      stdout += b;
      if (!onLine) return;
      buf += b;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) { onLine(buf.slice(0, i), performance.now()); buf = buf.slice(i + 1); }
    });
    c.stderr.setEncoding("utf8").on("data", (b: string) => { stderr += b; });
    const t = setTimeout(() => c.kill("SIGKILL"), 300_000);
    c.on("error", reject);
    c.on("close", (code) => { clearTimeout(t); resolve({ code: code ?? -1, stdout, stderr }); });
  });
}

const f = (n: number) => `${n.toFixed(0).padStart(5)} ms`;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "hsd-bench-wave-"));
  const env: NodeJS.ProcessEnv = { ...process.env, HSD_ROOT: join(dir, "l0") };
  const hsctl = (args: string[], onLine?: (line: string, t: number) => void) => run(process.execPath, [HSCTL, ...args], env, onLine);
  try {
    const t0 = performance.now();
    const nest = await hsctl(["nest", "--depth", "3", "--json"]);
    if (nest.code !== 0) throw new Error(`nest failed: ${nest.stderr}`);
    console.log(`depth-3 tree built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // Baseline plumbing: an OpenSSH reader key on level 0, and a git CLI clone.
    const key = join(dir, "id_bench");
    const kg = await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key], process.env);
    if (kg.code !== 0) throw new Error(`ssh-keygen: ${kg.stderr}`);
    const add = await hsctl(["access", "add", "--role", "reader", `${key}.pub`]);
    if (add.code !== 0) throw new Error(`access add: ${add.stderr}`);
    const st = JSON.parse((await hsctl(["status", "--json"])).stdout) as { address: string };
    const [host, port] = [st.address.slice(0, st.address.lastIndexOf(":")), st.address.slice(st.address.lastIndexOf(":") + 1)];
    // Loopback bench only: the host key is not pinned for the baseline client.
    const gitEnv: NodeJS.ProcessEnv = {
      PATH: process.env.PATH, HOME: dir, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", LC_ALL: "C",
      GIT_SSH_COMMAND: `ssh -F /dev/null -i ${key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p ${port}`,
    };
    const clone = join(dir, "cli-clone");
    const cl = await run("git", ["clone", "-q", "--bare", `ssh://hsd@${host}:${port}/${REPO}`, clone], gitEnv);
    if (cl.code !== 0) throw new Error(`git clone: ${cl.stderr}`);

    const noop: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const t = performance.now();
      const r = await hsctl(["sync", "--json"]);
      if (r.code !== 0) throw new Error(`sync: ${r.stderr}`);
      noop.push(performance.now() - t);
    }

    const rows: { total: number; perLevel: Map<string, { durationMs: number; arrivedMs: number }>; cli: number }[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const commit = await addCommit(join(dir, "l0", "demo", REPO), {
        [`src/actions/bench_wave_${i}.py`]: Array.from({ length: 40 }, (_, k) => `value_${i}_${k} = ${k * 31}`).join("\n"),
      }, `bench wave ${i}`);
      const perLevel = new Map<string, { durationMs: number; arrivedMs: number }>();
      const t = performance.now();
      let last = t;
      const r = await hsctl(["sync", "--json"], (line, at) => {
        if (!line.startsWith("{")) return;
        const e = JSON.parse(line) as { level: string; phase: string; kind: string; durationMs?: number; repos?: { name: string; servedCommit: string }[] };
        if (e.phase !== "sync" || e.kind !== "finished") return;
        if (e.repos?.find((x) => x.name === REPO)?.servedCommit !== commit) return;
        perLevel.set(e.level, { durationMs: e.durationMs ?? 0, arrivedMs: at - t });
        last = at;
      });
      if (r.code !== 0 || perLevel.size !== 4) throw new Error(`sync round ${i}: exit ${r.code}, ${perLevel.size} levels got it: ${r.stderr}`);
      // Same commit, one hop, git CLI over OpenSSH from level 0's (now refreshed) endpoint.
      const tc = performance.now();
      const fetch = await run("git", ["--git-dir", clone, "fetch", "-q", "origin", "+refs/heads/*:refs/heads/*"], gitEnv);
      const cli = performance.now() - tc;
      if (fetch.code !== 0) throw new Error(`git fetch: ${fetch.stderr}`);
      const got = (await readFile(join(clone, "refs", "heads", "_working"), "utf8").catch(() => "")).trim();
      if (got && got !== commit) throw new Error("the CLI fetched something else");
      rows.push({ total: last - t, perLevel, cli });
    }

    const levels = ["l0", "l0/l1", "l0/l1/l2", "l0/l1/l2/l3"];
    console.log(`unchanged depth-3 sync (hsctl start to exit): median ${f(median(noop))}  [${noop.map((x) => x.toFixed(0)).join(", ")}]`);
    console.log(`one commit, hsctl sync start -> last level reports it: median ${f(median(rows.map((r) => r.total)))}  [${rows.map((r) => r.total.toFixed(0)).join(", ")}]`);
    console.log("level          own sync (median)   report arrived (median)   vs git CLI fetch (1 hop)");
    const cli = median(rows.map((r) => r.cli));
    for (const l of levels) {
      const d = median(rows.map((r) => r.perLevel.get(l)!.durationMs));
      const a = median(rows.map((r) => r.perLevel.get(l)!.arrivedMs));
      console.log(`${l.padEnd(14)} ${f(d)}            ${f(a)}                 ${l === "l0" ? "(refresh from checkouts)" : `${(d / cli).toFixed(2)}x`}`);
    }
    console.log(`git CLI fetch of the commit from l0 over OpenSSH: median ${f(cli)}  [${rows.map((r) => r.cli.toFixed(0)).join(", ")}]`);
    const below = levels.slice(1).map((l) => median(rows.map((r) => r.perLevel.get(l)!.durationMs)));
    const worst = Math.max(...below);
    console.log(`goal ${worst <= 250 ? "MET " : "MISS"}: <= 250 ms per level below 0 (worst median ${worst.toFixed(0)} ms; l0's refresh ${median(rows.map((r) => r.perLevel.get("l0")!.durationMs)).toFixed(0)} ms)`);
    // Issue 15's per-hop goal, judged as it was stated: a level's own sync of the commit
    // (all six repos asked, as a level must) against the git CLI fetching that commit once.
    console.log(`goal ${worst <= 1.5 * cli ? "MET " : "MISS"}: one-commit sync <= 1.5x the git CLI's fetch of the same commit, per hop (worst level ${(worst / cli).toFixed(2)}x: ${worst.toFixed(0)} ms against ${cli.toFixed(0)} ms)`);
    await writeFile(join(dir, "done"), "");
  } finally {
    await hsctl(["destroy"]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
