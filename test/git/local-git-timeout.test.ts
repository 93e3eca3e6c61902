// Every wait on a local git process is bounded: runGit, and index-pack's
// process once its pack has ended, kill a process that does not finish and
// reject with CommandTimeout. The stand-in git is a shell script on PATH
// that takes its input and then hangs, as a git on a stalled disk would.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tempDir } from "../helpers/git-fixtures.js";
import { runGit } from "../../src/git/run-git.js";
import { IndexPack } from "../../src/git/divert-pack.js";
import { HsError } from "../../src/domain/errors.js";

/** A `git` that reads stdin to its end, writes its pid, then never exits. */
async function hangingGit(dir: string): Promise<{ bin: string; pidFile: string }> {
  const bin = join(dir, "bin");
  await mkdir(bin, { recursive: true });
  const pidFile = join(dir, "git.pid");
  await writeFile(join(bin, "git"), `#!/bin/sh\ncat >/dev/null\necho $$ > ${pidFile}\nexec sleep 600\n`);
  await chmod(join(bin, "git"), 0o755);
  return { bin, pidFile };
}

/** Even on a failed run, no stand-in is left sleeping. */
async function killFrom(pidFile: string): Promise<void> {
  const pid = Number(await readFile(pidFile, "utf8").catch(() => ""));
  if (pid > 0 && alive(pid)) process.kill(pid, "SIGKILL");
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

async function expectTimeout(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof HsError && err.code === "CommandTimeout" && typeof err.details.hint === "string");
}

test("runGit kills a git that does not finish within its bound and rejects with CommandTimeout", { timeout: 20_000 }, async (t) => {
  const tmp = await tempDir();
  const dir = tmp.path;
  t.after(() => killFrom(join(dir, "git.pid")).then(tmp.cleanup));
  const { bin, pidFile } = await hangingGit(dir);
  await expectTimeout(runGit(["status"], { env: { PATH: `${bin}:${process.env.PATH}` }, timeoutMs: 300 }));
  const pid = Number(await readFile(pidFile, "utf8"));
  assert.equal(alive(pid), false, "the hung git was killed");
});

test("an index-pack that hangs after its pack ended is killed: finish rejects with CommandTimeout", { timeout: 20_000 }, async (t) => {
  const tmp = await tempDir();
  const dir = tmp.path;
  t.after(() => killFrom(join(dir, "git.pid")).then(tmp.cleanup));
  const { bin, pidFile } = await hangingGit(dir);
  const gitdir = join(dir, "repo.git");
  await mkdir(join(gitdir, "objects", "pack"), { recursive: true });
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path}`; // IndexPack's git gets the daemon's PATH
  let ip: IndexPack;
  try { ip = new IndexPack(gitdir, undefined, 300); } finally { process.env.PATH = path; }
  await ip.write(Buffer.from("PACK"));
  await expectTimeout(ip.finish("demo"));
  const pid = Number(await readFile(pidFile, "utf8"));
  assert.equal(alive(pid), false, "the hung index-pack was killed");
  assert.equal(ip.done, true);
});
