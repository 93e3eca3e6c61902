// runCommand: argv without a shell, exit codes, check, timeouts, cancellation,
// stdin, and the prefixed runner used to run commands inside a namespace.

import { test } from "node:test";
import assert from "node:assert/strict";
import { runCommand, prefixedRunner, firstLine, type CommandRunner } from "../../src/util/command-runner.js";
import { CancelledError, CommandFailedError, CommandTimeoutError, HsError } from "../../src/domain/errors.js";

const node = process.execPath;

test("captures stdout, stderr and the exit code; no shell interprets argv", async () => {
  const r = await runCommand([node, "-e", "process.stdout.write(process.argv[1]); process.stderr.write('e'); process.exit(3)", "$HOME;|x"]);
  assert.deepEqual(r, { code: 3, stdout: "$HOME;|x", stderr: "e" });
});

test("check: non-zero exit rejects with CommandFailedError naming the command and stderr's first line", async () => {
  await assert.rejects(
    runCommand([node, "-e", "console.error('\\n  first problem  \\nsecond'); process.exit(2)"], { check: true, label: "probe-cmd" }),
    (e: unknown) => {
      assert.ok(e instanceof CommandFailedError);
      assert.equal(e.code, "CommandFailed");
      assert.equal(e.details.command, "probe-cmd");
      assert.equal(e.details.exitCode, 2);
      assert.equal(e.details.stderr, "first problem");
      assert.match(e.message, /probe-cmd exited 2: first problem/);
      assert.doesNotMatch(e.message, /second/);
      return true;
    },
  );
});

test("errors name argv[0], not its arguments (they may carry values that must not leak)", async () => {
  await assert.rejects(runCommand([node, "-e", "process.exit(1)", "s3cret-value"], { check: true }), (e: unknown) => {
    assert.ok(e instanceof CommandFailedError);
    assert.doesNotMatch(e.message + JSON.stringify(e.details), /s3cret-value/);
    return true;
  });
});

test("a missing binary rejects even without check", async () => {
  await assert.rejects(runCommand(["/nonexistent/hsd-no-such-binary"]), (e: unknown) => {
    assert.ok(e instanceof CommandFailedError);
    assert.equal(e.details.errno, "ENOENT");
    return true;
  });
});

test("timeout kills the command and rejects with CommandTimeoutError, promptly", async () => {
  const t0 = Date.now();
  await assert.rejects(runCommand([node, "-e", "setTimeout(() => {}, 60000)"], { timeoutMs: 300 }), (e: unknown) => {
    assert.ok(e instanceof CommandTimeoutError);
    assert.equal(e.code, "CommandTimeout");
    assert.equal(e.details.timeoutMs, 300);
    return true;
  });
  assert.ok(Date.now() - t0 < 5_000, "timed out long after the bound");
});

test("timeout does not wait for a grandchild holding the pipes open", async () => {
  // The child spawns a detached sleeper that inherits stdout, then hangs itself.
  const script = "require('child_process').spawn(process.execPath, ['-e', 'setTimeout(()=>{}, 8000)'], { stdio: 'inherit' }); setTimeout(() => {}, 60000)";
  const t0 = Date.now();
  await assert.rejects(runCommand([node, "-e", script], { timeoutMs: 400 }), CommandTimeoutError);
  assert.ok(Date.now() - t0 < 4_000);
});

test("abort signal kills the command: CancelledError, or the signal's HsError reason", async () => {
  const ac = new AbortController();
  const p = runCommand([node, "-e", "setTimeout(() => {}, 60000)"], { signal: ac.signal, timeoutMs: 30_000 });
  setTimeout(() => ac.abort(), 100);
  await assert.rejects(p, CancelledError);

  const reason = new HsError("phase budget spent");
  await assert.rejects(runCommand([node, "-e", "0"], { signal: AbortSignal.abort(reason) }), (e) => e === reason);
});

test("input goes to stdin", async () => {
  const r = await runCommand([node, "-e", "process.stdin.pipe(process.stdout)"], { input: "hello stdin" });
  assert.equal(r.stdout, "hello stdin");
});

test("prefixedRunner prepends argv and labels errors with the inner command", async () => {
  const seen: (readonly string[])[] = [];
  const fake: CommandRunner = async (argv, opts) => {
    seen.push(argv);
    assert.equal(opts?.label, "ip");
    return { code: 0, stdout: "", stderr: "" };
  };
  await prefixedRunner(fake, ["nsenter", "--net=/x", "--"])(["ip", "link"]);
  assert.deepEqual(seen, [["nsenter", "--net=/x", "--", "ip", "link"]]);

  const real = prefixedRunner(runCommand, [node, "-e", "process.exit(4)", "--"]);
  await assert.rejects(real(["inner-tool", "arg"], { check: true }), (e: unknown) => {
    assert.ok(e instanceof CommandFailedError);
    assert.equal(e.details.command, "inner-tool");
    return true;
  });
});

test("firstLine skips blank lines and bounds length", () => {
  assert.equal(firstLine("\n\n  x y \nz"), "x y");
  assert.equal(firstLine(""), "");
  assert.equal(firstLine("a".repeat(400), 10), "aaaaaaaaaa…");
});
