// images: in hsd.yaml: defaults, validation (every mistake at once), the
// round trip through the writer, and what a child is told.

import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load-config.js";
import { configDocument, configYaml, inheritedConfig } from "../../src/config/write-config.js";
import { configIssuesOf } from "../../src/config/config-issues.js";
import { PROVIDER_CONFIGS } from "../../src/providers/registry.js";
import { childImageValue, pveConfigOf } from "../../src/providers/pve/pve-config.js";
import { childPveImage } from "../../src/providers/pve/install-child.js";

const opts = { root: "/srv/level", providers: PROVIDER_CONFIGS };
const SHA = "a".repeat(64);

test("an image's path defaults to homestak's iso directory; sha256 is optional; pve.image defaults to pve-9", () => {
  const c = parseConfig(`images:\n  pve-9: {}\n  debian-13: { sha256: '${SHA.toUpperCase()}' }\n  mine: ./imgs/mine.img\npve: {}\n`, "hsd.yaml", opts);
  assert.deepEqual(c.images.entries, {
    "pve-9": { path: "/var/lib/vz/template/iso/pve-9.img", sha256: "" },
    "debian-13": { path: "/var/lib/vz/template/iso/debian-13.img", sha256: SHA },
    mine: { path: "/srv/level/imgs/mine.img", sha256: "" },
  });
  assert.equal(pveConfigOf(c)?.image, "pve-9");
  assert.equal(c.images.maxTransfers, 2);
  const d = parseConfig("image_dir: imgs\nimages: { x: {} }\n", "hsd.yaml", opts);
  assert.equal(d.images.entries.x!.path, "/srv/level/imgs/x.img");
});

test("bad image names, bad sha256 and a pve.image that names no image are reported together", () => {
  let err: unknown;
  try {
    parseConfig([
      "images:",
      "  ../etc/passwd: {}",
      "  ok: { sha256: nothex, size: big }",
      "pve: { image: debian-13 }",
    ].join("\n"), "hsd.yaml", opts);
  } catch (e) { err = e; }
  assert.equal((err as { code?: string }).code, "ConfigInvalid");
  assert.deepEqual(configIssuesOf(err as never).map((i) => i.key).sort(), ["images.../etc/passwd", "images.ok.sha256", "images.ok.size", "pve.image"]);
});

test("images survive write then load; a child is told the names and known sha256s, never the parent's paths", () => {
  const c = parseConfig(`image_dir: /data/iso\nimages:\n  pve-9: { path: /big/pve.img, sha256: '${SHA}' }\n  d13: {}\nssh: { max_image_transfers: 3 }\npve: { image: d13 }\n`, "hsd.yaml", opts);
  const back = parseConfig(configYaml(configDocument(c), "rt"), "rt.yaml", opts);
  assert.deepEqual({ ...back, source: "" }, { ...c, source: "" });
  const child = parseConfig(configYaml({ ...inheritedConfig(c), image_dir: "/child/images" }, "child"), "child.yaml", { root: "/child", providers: PROVIDER_CONFIGS });
  assert.deepEqual(child.images.entries, {
    "pve-9": { path: "/child/images/pve-9.img", sha256: SHA },
    d13: { path: "/child/images/d13.img", sha256: "" },
  });
});

test("an image's size rides with its sha256: parsed, written back, and told to a child with what the parent hashed", () => {
  const SHA2 = "b".repeat(64);
  const c = parseConfig([
    "images:",
    `  pve-9: { sha256: '${SHA}', size: 4096 }`,
    "  d13: {}",
    `  d12: { sha256: '${SHA}' }`,
    "  d11: {}",
  ].join("\n"), "hsd.yaml", opts);
  assert.equal(c.images.entries["pve-9"]!.size, 4096);
  assert.equal(c.images.entries.d13!.size, undefined);
  assert.deepEqual({ ...parseConfig(configYaml(configDocument(c), "rt"), "rt.yaml", opts), source: "" }, { ...c, source: "" });
  // What this level hashed of its own files: told as is where config says nothing; a configured
  // sha256 wins, and a digest of another sha256 says nothing of the size.
  const told = inheritedConfig(c, undefined, {
    "pve-9": { sha256: SHA, size: 4096 }, d13: { sha256: SHA2, size: 10 }, d12: { sha256: SHA2, size: 20 },
  }).images;
  assert.deepEqual(told, { "pve-9": { sha256: SHA, size: 4096 }, d13: { sha256: SHA2, size: 10 }, d12: { sha256: SHA }, d11: {} });
  const child = parseConfig(configYaml({ images: told }, "child"), "child.yaml", { root: "/child", providers: PROVIDER_CONFIGS });
  assert.deepEqual(child.images.entries.d13, { path: "/var/lib/vz/template/iso/d13.img", sha256: SHA2, size: 10 });
});

test("pve.image as a list gives each depth its image: the head for this level's children, the rest passed down, the last going on", () => {
  const c = parseConfig(`images:\n  pve-9: {}\n  debian-13: {}\npve: { image: [pve-9, debian-13, pve-9] }\n`, "hsd.yaml", opts);
  const pve = pveConfigOf(c)!;
  assert.deepEqual([pve.image, pve.imagesBelow], ["pve-9", ["debian-13", "pve-9"]]);
  const back = parseConfig(configYaml(configDocument(c), "rt"), "rt.yaml", opts);
  assert.deepEqual({ ...back, source: "" }, { ...c, source: "" });
  // Down the tree: l1 gets [debian-13, pve-9], l2 gets pve-9, and so does every level below.
  const walk: unknown[] = [];
  let cur = c;
  for (let d = 0; d < 3; d++) {
    const value = childImageValue(pveConfigOf(cur)!);
    walk.push(value);
    cur = parseConfig(configYaml({ images: { "pve-9": {}, "debian-13": {} }, pve: { image: value } }, "child"), "child.yaml", opts);
  }
  assert.deepEqual(walk, [["debian-13", "pve-9"], "pve-9", "pve-9"]);
  assert.deepEqual(pveConfigOf(parseConfig("pve: { image: [debian-13] }\n", "hsd.yaml", opts)), pveConfigOf(parseConfig("pve: { image: debian-13 }\n", "hsd.yaml", opts)));
  // A manifest child that does not hold the list's head takes the first image it holds.
  assert.deepEqual(childPveImage(["debian-13", "pve-9"], { "debian-13": {}, "pve-9": {} }), ["debian-13", "pve-9"]);
  assert.equal(childPveImage(["debian-13", "pve-9"], { "pve-9": {} }), "pve-9");
});

test("pve.image as a list: every entry is checked (name, under images:), and an empty list is refused", () => {
  const issues = (yaml: string) => {
    try { parseConfig(yaml, "hsd.yaml", opts); } catch (e) {
      assert.equal((e as { code?: string }).code, "ConfigInvalid");
      return configIssuesOf(e as never).map((i) => i.key).sort();
    }
    return [];
  };
  assert.deepEqual(issues("images: { pve-9: {} }\npve: { image: [pve-9, debian-13, ../x] }\n"), ["pve.image.1", "pve.image.2"]);
  assert.deepEqual(issues("pve: { image: [] }\n"), ["pve.image"]);
  assert.deepEqual(issues("pve: { image: [pve-9, { a: 1 }] }\n"), ["pve.image.1"]);
});
