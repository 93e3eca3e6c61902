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

test("hsd-image: the streamed form, the header-only form and the raw form pinned to a sha256 parse to their modes", () => {
  const sha = "0123456789abcdef".repeat(4);
  assert.deepEqual(parseExecCommand("hsd-image pve-9 42"), { service: "hsd-image", image: "pve-9", offset: 42, mode: "stream" });
  assert.deepEqual(parseExecCommand("hsd-image --head pve-9"), { service: "hsd-image", image: "pve-9", offset: 0, mode: "head" });
  assert.deepEqual(parseExecCommand(`hsd-image --raw pve-9 1048576 ${sha}`), {
    service: "hsd-image", image: "pve-9", offset: 1048576, mode: "raw", sha256: sha,
  });
});

test("hsd-image: anything past the three forms is ImageNotFound", () => {
  const sha = "0123456789abcdef".repeat(4);
  for (const cmd of [
    "hsd-image --head ../pve-9", "hsd-image --head /var/lib/vz/template/iso/pve-9.img", "hsd-image --head pve-9 0", "hsd-image --head",
    "hsd-image --raw pve-9 0", `hsd-image --raw pve-9 0 ${sha.toUpperCase()}`, `hsd-image --raw pve-9 0 ${sha.slice(1)}`,
    `hsd-image --raw pve-9 -1 ${sha}`, `hsd-image --raw pve-9 01 ${sha}`, `hsd-image --raw pve-9 0 ${sha} x`, `hsd-image --raw ../x 0 ${sha}`,
    `hsd-image --raw pve-9 99999999999999999 ${sha}`, "hsd-image --tail pve-9", "hsd-image -x 0", "hsd-image --head pve-9;id",
    `hsd-image --raw pve-9 0 ${sha}\n`, "hsd-image  --head pve-9",
  ]) {
    assert.equal(code(() => parseExecCommand(cmd)), "ImageNotFound", JSON.stringify(cmd));
  }
});
