// images: in hsd.yaml: defaults, validation (every mistake at once), the
// round trip through the writer, and what a child is told.

import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load-config.js";
import { configDocument, configYaml, inheritedConfig } from "../../src/config/write-config.js";
import { configIssuesOf } from "../../src/config/config-issues.js";
import { PROVIDER_CONFIGS } from "../../src/providers/registry.js";
import { pveConfigOf } from "../../src/providers/pve/pve-config.js";

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
      "  ok: { sha256: nothex, size: 3 }",
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
