// Images flow down a real tree of hsd processes (local provider): level 0
// serves two images from files the operator named, every level below fetches
// them from its parent at sync into its own level directory (sha256-verified)
// and serves them on; a second sync moves nothing. A missing image stops the
// nest in preflight, and `hsctl doctor` reports it. The bytes move through the
// OpenSSH client (the CI image has one).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { e2eTree, hsctl, jsonLines, levelRoots } from "../helpers/hsctl.js";

const { l0, env } = await e2eTree("hsd-images-");
await mkdir(join(l0, "iso"), { recursive: true });
const pve9 = randomBytes(3 << 20);
const deb13 = randomBytes(300_000);
await writeFile(join(l0, "iso", "pve-9.img"), pve9);
await writeFile(join(l0, "iso", "debian-13.img"), deb13);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
await writeFile(join(l0, "hsd.yaml"), `level: { name: l0 }
ssh: { host: 127.0.0.1, port: 0 }
image_dir: iso
images:
  pve-9: {}
  debian-13: { sha256: ${sha(deb13)} }
`);

test("an image missing at level 0 fails the nest in preflight, naming it; nothing is built", async () => {
  await rename(join(l0, "iso", "pve-9.img"), join(l0, "iso", "moved-away"));
  try {
    const r = await hsctl(["nest", "--depth", "1", "--json"], env, 120_000);
    assert.equal(r.code, 1, r.stderr);
    const failed = jsonLines(r.stdout).filter((e) => e.kind === "failed");
    assert.deepEqual(failed.map((e) => [e.level, e.phase, e.failure.code]), [["l0/l1", "preflight", "PreflightFailed"]]);
    assert.match(failed[0]!.failure.message, /image pve-9/);
    // hsctl doctor runs the same image checks, with their hints, and builds nothing.
    const d = await hsctl(["doctor", "--json"], env, 60_000);
    assert.equal(d.code, 1, d.stderr);
    const checks = JSON.parse(d.stdout) as { name: string; result: string; hint?: string }[];
    const images = checks.filter((c) => c.name.startsWith("image "));
    assert.deepEqual(images.map((c) => [c.name, c.result]), [["image pve-9", "failed"], ["image debian-13", "ok"]]);
    assert.ok(images[0]!.hint, "the failed image check carries a hint");
  } finally {
    await rename(join(l0, "iso", "moved-away"), join(l0, "iso", "pve-9.img"));
  }
});

test("nest --depth 3: every level below 0 received both images from its parent, whole, into its level directory", async () => {
  const r = await hsctl(["nest", "--depth", "3", "--json"], env, 180_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
  const roots = (await levelRoots(l0)).slice(1);
  assert.equal(roots.length, 3);
  for (const lr of roots) {
    assert.ok((await readFile(join(lr, "images", "pve-9.img"))).equals(pve9), lr);
    assert.ok((await readFile(join(lr, "images", "debian-13.img"))).equals(deb13), lr);
    assert.equal(existsSync(join(lr, "images", "pve-9.img.partial")), false);
    // With an OpenSSH client installed, the bytes moved through it (its stdout into the partial), not through ssh2.
    const routes = (await readFile(join(lr, "hsd.log"), "utf8")).split("\n").filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { msg?: string; via?: string; image?: string }).filter((l) => l.msg === "image transfer route");
    assert.deepEqual(routes.map((l) => [l.image, l.via]), [["pve-9", "openssh"], ["debian-13", "openssh"]], lr);
  }
  const ev = jsonLines(r.stdout);
  for (const level of ["l0/l1", "l0/l1/l2", "l0/l1/l2/l3"]) {
    const done = ev.filter((e) => e.level === level && e.phase === "sync" && e.kind === "progress" && /^pve-9: 3\.0 of 3\.0 MiB/.test(e.message ?? ""));
    assert.ok(done.length >= 1, `${level} reported no finished pve-9 transfer`);
  }
});

test("a second sync moves no image bytes: each level already has them with the right sha256", async () => {
  const r = await hsctl(["sync", "--json"], env, 120_000);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
  const imageProgress = jsonLines(r.stdout).filter((e) => e.phase === "sync" && e.kind === "progress" && /MiB\/s/.test(e.message ?? ""));
  assert.deepEqual(imageProgress, []);
});
