// parseExecCommand: accepted spellings, and every rejected input its own test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseExecCommand } from "../../src/ssh/exec-command.js";
import { HsError } from "../../src/domain/errors.js";

function code(fn: () => unknown): string {
  try { fn(); } catch (err) { assert.ok(err instanceof HsError); return err.code; }
  return "none";
}

for (const cmd of [
  "git-upload-pack 'site-config'", "git-upload-pack '/site-config'", "git-upload-pack '/site-config.git'",
  "git-upload-pack site-config", "git upload-pack 'site-config'", "git-upload-pack /site-config.git",
]) {
  test(`accepts ${cmd}`, () => {
    assert.deepEqual(parseExecCommand(cmd), { service: "git-upload-pack", repo: "site-config" });
  });
}

const notFound: Record<string, string> = {
  "path traversal": "git-upload-pack '../../etc/passwd'",
  "relative parent": "git-upload-pack '../site-config'",
  "absolute system path": "git-upload-pack '/etc/passwd'",
  "nested path": "git-upload-pack 'a/b'",
  "double dot name": "git-upload-pack 'a..b'",
  "shell injection in quotes": "git-upload-pack 'repo; rm -rf /'",
  "double-quote games": "git-upload-pack \"repo'\"",
  "unbalanced quote": "git-upload-pack 'repo",
  "embedded quote": "git-upload-pack 'rep'o'",
  "command substitution": "git-upload-pack '$(id)'",
  "backticks": "git-upload-pack '`id`'",
  "leading dot": "git-upload-pack '.hidden'",
  "leading dash (option injection)": "git-upload-pack '--help'",
  "empty name": "git-upload-pack ''",
  "tilde home": "git-upload-pack '~/repo'",
  "newline": "git-upload-pack 'repo\nid'",
  "nul byte": "git-upload-pack 'repo\0x'",
  "space in name": "git-upload-pack 'my repo'",
  "overlong name": `git-upload-pack '${"a".repeat(65)}'`,
  "pipe": "git-upload-pack repo|id",
  "double slash": "git-upload-pack '//site-config'",
};
for (const [what, cmd] of Object.entries(notFound)) {
  test(`rejects ${what} as RepoNotFound`, () => assert.equal(code(() => parseExecCommand(cmd)), "RepoNotFound"));
}

const denied: Record<string, string> = {
  "receive-pack": "git-receive-pack 'site-config'",
  "receive-pack (space form)": "git receive-pack 'site-config'",
  "upload-archive": "git-upload-archive 'site-config'",
  "arbitrary command": "id",
  "shell chain before upload-pack": "true; git-upload-pack 'site-config'",
  "sh -c": "sh -c 'git-upload-pack site-config'",
  "bare upload-pack with no repo": "git-upload-pack",
  "upload-pack option injection": "git-upload-pack --upload-pack=id 'x'",
  "empty": "",
  "overlong command": `git-upload-pack '${"a".repeat(2000)}'`,
  "prefixed env": "GIT_PROTOCOL=version=2 git-upload-pack 'site-config'",
};
for (const [what, cmd] of Object.entries(denied)) {
  test(`rejects ${what}`, () => {
    const c = code(() => parseExecCommand(cmd));
    assert.ok(c === "AccessDenied" || c === "RepoNotFound", `got ${c}`);
    if (what !== "upload-pack option injection") assert.equal(c, "AccessDenied");
  });
}
