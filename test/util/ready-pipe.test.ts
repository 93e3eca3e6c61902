// readyFromPipe against real child processes: a failure line written just
// before exit is never lost, and a child that exits while a process it
// started still holds the pipe is reported without waiting for that process.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readyFromPipe } from "../../src/util/ready-pipe.js";
import { ProviderError } from "../../src/domain/errors.js";

function child(script: string) {
  return spawn(process.execPath, ["-e", script], { stdio: ["ignore", "ignore", "ignore", "pipe"] });
}

test("a failure line written right before exit reaches the caller with the child's code", async () => {
  const p = child(`require("fs").writeSync(3, JSON.stringify({ error: { code: "AddressInUse", message: "port taken", hint: "h" } }) + "\\n"); process.exit(1);`);
  const err = await readyFromPipe(p, AbortSignal.timeout(20_000), async () => "").then(() => assert.fail("resolved"), (e: unknown) => e);
  assert.ok(err instanceof ProviderError, String(err));
  assert.deepEqual(err.details.failure, { code: "AddressInUse", message: "port taken", hint: "h" });
});

test("a ready line resolves; a malformed failure line is a typed error, not a ready line", async () => {
  const ok = child(`require("fs").writeSync(3, JSON.stringify({ pid: 1, sshPort: 5 }) + "\\n"); setTimeout(() => {}, 100);`);
  assert.equal((await readyFromPipe(ok, AbortSignal.timeout(20_000), async () => "")).sshPort, 5);
  const bad = child(`require("fs").writeSync(3, JSON.stringify({ error: "nope" }) + "\\n"); process.exit(1);`);
  const err = await readyFromPipe(bad, AbortSignal.timeout(20_000), async () => "").then(() => assert.fail("resolved"), (e: unknown) => e);
  assert.ok(err instanceof ProviderError);
  assert.equal((err.details.failure as { code: string }).code, "Internal");
});

test("a child that exits while its own child holds the pipe is reported without waiting for that process", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-ready-pipe-"));
  const pidFile = join(dir, "grandchild.pid");
  // The grandchild inherits the pipe's write end (fd 3) and would hold it for 300 s.
  const p = spawn(process.execPath, ["-e", `
    const c = require("child_process").spawn("sleep", ["300"], { stdio: ["ignore", "ignore", "ignore", 3], detached: true });
    require("fs").writeFileSync(process.env.PID_FILE, String(c.pid));
    process.exit(3);`], { stdio: ["ignore", "ignore", "ignore", "pipe"], env: { ...process.env, PID_FILE: pidFile } });
  let grandchild = 0;
  try {
    const err = await readyFromPipe(p, AbortSignal.timeout(60_000), async () => "").then(() => assert.fail("resolved"), (e: unknown) => e);
    grandchild = Number(await readFile(pidFile, "utf8"));
    assert.ok(err instanceof ProviderError, String(err));
    assert.equal(err.details.exitCode, 3);
    // Reported while the pipe is still held open: the grandchild is alive.
    assert.doesNotThrow(() => process.kill(grandchild, 0));
  } finally {
    grandchild ||= Number(await readFile(pidFile, "utf8").catch(() => "0"));
    if (grandchild) try { process.kill(grandchild, "SIGKILL"); } catch { /* gone */ }
    await rm(dir, { recursive: true, force: true });
  }
});
