// homestak.user end to end, as root (CI runs as root): a throwaway system user
// owns every level's homestak trees and site-config files after a nest and
// after a sync into trees it already owns (hsd's root git trusts exactly those
// paths, per call), secrets.yaml is 0600 and its, and a step with `user:` runs
// as it and reads config/secrets.yaml. The user is removed even on failure.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, stat, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";

assert.equal(process.getuid?.(), 0, "homestak.user needs root to hand files to another user; CI runs this as root");
const { l0, env } = await e2eTree("hsd-hsuser-");
const user = `hsdt${randomBytes(3).toString("hex")}`;
execFileSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]);
after(() => { spawnSync("userdel", [user]); });
const uid = Number(execFileSync("id", ["-u", user], { encoding: "utf8" }).trim());

await mkdir(l0, { recursive: true });
await writeFile(join(l0, "hsd.yaml"), `level: { name: l0 }
ssh: { host: 127.0.0.1, port: 0 }
homestak: { user: ${user} }
configure:
  steps:
    - name: as-owner
      run: [sh, -c, 'echo "whoami=$(id -un)"; head -c 1 ../../config/secrets.yaml >/dev/null && echo secrets-readable']
      cwd: iac-driver
      user: ${user}
`);

/** Paths under `dir` not owned by the user (find, a real process). */
function notOwned(dir: string): string[] {
  return execFileSync("find", [dir, "!", "-user", user], { encoding: "utf8" }).split("\n").filter(Boolean);
}

async function checkOwnership(): Promise<void> {
  for (const lr of (await levelRoots(l0)).slice(1)) {
    const hs = join(lr, "homestak");
    assert.deepEqual(notOwned(hs), [], `${lr}: everything under the homestak root is ${user}'s`);
    for (const tree of ["bootstrap", "config", "iac/ansible", "iac/iac-driver"]) assert.equal((await stat(join(hs, tree, ".git"))).uid, uid, tree);
    const sec = await stat(join(hs, "config", "secrets.yaml"));
    assert.equal(sec.mode & 0o777, 0o600);
    assert.equal(sec.uid, uid);
    assert.equal((await stat(join(hs, "config", "site.yaml"))).uid, uid);
  }
}

test("nest --depth 2: the trees and site-config files are the user's, and its step runs as it and reads secrets.yaml", async () => {
  const r = await hsctl(["nest", "--depth", "2", "--json"], env, 180_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
  const ev = jsonLines(r.stdout).filter((e) => e.phase === "configure" && typeof e.message === "string");
  for (const level of ["l0/l1", "l0/l1/l2"]) {
    const lines = ev.filter((e) => e.level === level).map((e) => e.message as string).join("\n");
    assert.match(lines, new RegExp(`as-owner\\| whoami=${user}`), level);
    assert.match(lines, /as-owner\| secrets-readable/, level);
  }
  await checkOwnership();
});

test("a sync into trees the user owns: hsd's git accepts them, the edit arrives, and ownership holds", async () => {
  const playbook = join(l0, "demo", "ansible", "playbooks", "pve-setup.yml");
  await writeFile(playbook, (await readFile(playbook, "utf8")).replace("# version: 1", "# version: 2-owned"));
  const r = await hsctl(["sync", "--configure", "--json"], env, 120_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
  for (const lr of (await levelRoots(l0)).slice(1)) {
    assert.match(await readFile(join(lr, "homestak", "iac", "ansible", "playbooks", "pve-setup.yml"), "utf8"), /# version: 2-owned/);
  }
  await checkOwnership();
  // git itself stays strict: without hsd's per-call trust, root's git refuses the user's tree.
  const lr1 = (await levelRoots(l0))[1]!;
  const plain = spawnSync("git", ["-C", join(lr1, "homestak", "iac", "ansible"), "status"], { encoding: "utf8", env: { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1" } });
  assert.notEqual(plain.status, 0, "root's git without safe.directory refuses a tree another user owns");
});
