// known_hosts as OpenSSH reads it: plain, [host]:port, hashed, wildcard,
// negated and @revoked entries. The hashed line is made by ssh-keygen -H
// itself, so the HMAC form is OpenSSH's, not ours.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkHostKey, knownHostName, parseKnownHosts } from "../../src/ssh/known-hosts.js";

const A = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const B = "AAAAC3NzaC1lZDI1NTE5AAAAIB5xj4Cr4E7uWw3GmMKq9FmHqYbq9ho5T9y9+QO6dU3E";
const blob = (b64: string) => Buffer.from(b64, "base64");
const ED = "ssh-ed25519";

test("the name is host on port 22, [host]:port otherwise", () => {
  assert.equal(knownHostName("PVE1", 22), "pve1");
  assert.equal(knownHostName("10.0.0.1", 2222), "[10.0.0.1]:2222");
});

test("known, unknown, changed, by port", () => {
  const e = parseKnownHosts(`# comment\n[pve1]:2222 ${ED} ${A}\npve2,pve3 ${ED} ${A} c\n`);
  assert.equal(checkHostKey(e, "pve1", 2222, ED, blob(A)).kind, "known");
  assert.equal(checkHostKey(e, "pve1", 22, ED, blob(A)).kind, "unknown");
  assert.equal(checkHostKey(e, "pve3", 22, ED, blob(A)).kind, "known");
  const changed = checkHostKey(e, "pve1", 2222, ED, blob(B));
  assert.equal(changed.kind, "changed");
  assert.deepEqual(changed.kind === "changed" ? changed.lines : [], [2]);
  // Another key type on file is not this key type's record: unknown, as OpenSSH says.
  assert.equal(checkHostKey(e, "pve1", 2222, "ecdsa-sha2-nistp256", blob(B)).kind, "unknown");
});

test("wildcards, negation and @revoked", () => {
  const e = parseKnownHosts(`*.lab,!bad.lab ${ED} ${A}\n@revoked * ${ED} ${B}\n`);
  assert.equal(checkHostKey(e, "x.lab", 22, ED, blob(A)).kind, "known");
  assert.equal(checkHostKey(e, "bad.lab", 22, ED, blob(A)).kind, "unknown");
  assert.equal(checkHostKey(e, "x.lab", 22, ED, blob(B)).kind, "revoked");
});

test("a line hashed by ssh-keygen -H matches its host and port only", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hsd-kh-"));
  try {
    const f = join(dir, "known_hosts");
    await writeFile(f, `[10.1.2.3]:2222 ${ED} ${A}\n`);
    execFileSync("ssh-keygen", ["-q", "-H", "-f", f]);
    const e = parseKnownHosts(await readFile(f, "utf8"));
    assert.match(e[0]!.patterns, /^\|1\|/);
    assert.equal(checkHostKey(e, "10.1.2.3", 2222, ED, blob(A)).kind, "known");
    assert.equal(checkHostKey(e, "10.1.2.3", 2223, ED, blob(A)).kind, "unknown");
    assert.equal(checkHostKey(e, "10.1.2.3", 2222, ED, blob(B)).kind, "changed");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
