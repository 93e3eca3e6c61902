// Generates a checkout whose pack is large and incompressible (random blobs
// spread over a few commits), for the large-pack test and bench/sync-large.ts.
// Written through `git fast-import` so hundreds of MB take seconds, not a
// process per file. Imported by test/git/** and bench/** only.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { cleanGitEnv } from "../../src/git/run-git.js";

export interface LargeRepoSpec {
  /** Total blob bytes (the pack is about this size: random data does not compress). */
  bytes: number;
  /** Size of each file; default 100 KiB, as in issue 16's report. */
  fileBytes?: number;
  /** Commits the files are spread over; default 10. */
  commits?: number;
}

function gitSpawn(args: string[], cwd: string) {
  return spawn("git", args, {
    cwd, stdio: ["pipe", "ignore", "pipe"],
    env: cleanGitEnv({
      GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_AUTHOR_NAME: "bench", GIT_AUTHOR_EMAIL: "bench@localhost", GIT_COMMITTER_NAME: "bench", GIT_COMMITTER_EMAIL: "bench@localhost",
    }),
  });
}

function wait(c: ReturnType<typeof gitSpawn>, what: string): Promise<void> {
  let err = "";
  c.stderr!.on("data", (b) => { err += b; });
  return new Promise((resolve, reject) => {
    c.on("error", reject);
    c.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${what} exited ${code}: ${err.slice(-500)}`))));
  });
}

async function git(args: string[], cwd: string): Promise<void> {
  const c = gitSpawn(args, cwd);
  c.stdin!.end();
  await wait(c, `git ${args[0]}`);
}

/** Creates a non-bare repo at `dir` on branch main with the spec's random files, checked out. */
export async function generateLargeRepo(dir: string, spec: LargeRepoSpec): Promise<void> {
  const fileBytes = spec.fileBytes ?? 100 * 1024;
  const commits = spec.commits ?? 10;
  const files = Math.max(1, Math.round(spec.bytes / fileBytes));
  await mkdir(dir, { recursive: true });
  await git(["init", "-q", "-b", "main"], dir);
  // zlib level 0 (stored): random data does not compress at any level, so spend no CPU trying.
  const fi = gitSpawn(["-c", "pack.compression=0", "-c", "core.compression=0", "fast-import", "--quiet"], dir);
  const done = wait(fi, "git fast-import");
  const write = (b: Buffer | string) => (fi.stdin!.write(b) ? Promise.resolve() : new Promise<void>((r) => fi.stdin!.once("drain", r)));
  const perCommit = Math.ceil(files / commits);
  let n = 0;
  for (let c = 0; c < commits && n < files; c++) {
    const t = 1_700_000_000 + c * 60;
    const msg = `bulk ${c}\n`;
    await write(`commit refs/heads/main\ncommitter bench <bench@localhost> ${t} +0000\ndata ${Buffer.byteLength(msg)}\n${msg}`);
    for (let i = 0; i < perCommit && n < files; i++, n++) {
      await write(`M 100644 inline blobs/${String(c).padStart(3, "0")}/f${String(n).padStart(6, "0")}.bin\ndata ${fileBytes}\n`);
      await write(randomBytes(fileBytes));
      await write("\n");
    }
    await write("\n");
  }
  fi.stdin!.end();
  await done;
  await git(["reset", "-q", "--hard", "main"], dir);
}

/** One more commit with one new random file (for an incremental sync). */
export async function addLargeRepoCommit(dir: string, bytes = 100 * 1024, tag = "inc"): Promise<void> {
  const { writeFile } = await import("node:fs/promises");
  const { join } = await import("node:path");
  await writeFile(join(dir, `${tag}-${Date.now()}.bin`), randomBytes(bytes));
  await git(["add", "-A"], dir);
  await git(["commit", "-q", "-m", tag], dir);
}
