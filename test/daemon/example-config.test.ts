// daemon/hsd.example.yaml documents every key with its default: it must load,
// and load to exactly the built-in defaults, so the example cannot drift.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load-config.js";
import { PROVIDER_CONFIGS } from "../../src/providers/registry.js";
import { REPO } from "./daemon-process.js";

test("hsd.example.yaml parses to the defaults", async () => {
  const text = await readFile(join(REPO, "daemon/hsd.example.yaml"), "utf8");
  const fromExample = parseConfig(text, "hsd.example.yaml", { root: "/srv/level", providers: PROVIDER_CONFIGS });
  const defaults = parseConfig("", "<defaults>", { root: "/srv/level", providers: PROVIDER_CONFIGS });
  assert.deepEqual({ ...fromExample, source: "" }, { ...defaults, source: "" });
});

test("the example names every top-level section the loader accepts", async () => {
  const text = await readFile(join(REPO, "daemon/hsd.example.yaml"), "utf8");
  for (const key of ["level", "api", "ssh", "repos", "repo_names", "secret_patterns", "parent", "timeouts", "budgets",
    "nest", "secrets", "sync", "pve", "log", "homestak", "configure"]) {
    assert.match(text, new RegExp(`^#? ?${key}:`, "m"), key);
  }
});
