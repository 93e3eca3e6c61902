// The configure step a level 0 with no repos (the demo set) runs at every
// level when the operator configured none: the demo iac-driver's run.sh,
// invoked as homestak's own pve-config scenario would be, in dry-run. Used
// by the daemon wiring.
// Imported by: src/daemon.

import type { ConfigureStep, HsdConfig } from "../config/config.js";

export const DEMO_STEP: ConfigureStep = Object.freeze({
  name: "pve-config",
  run: Object.freeze(["./run.sh", "scenario", "run", "pve-config", "--local", "--dry-run"]),
  cwd: "iac-driver",
  env: Object.freeze({}),
  budgetMs: 60_000,
  user: "",
  when: Object.freeze({}),
});

/** The config with the demo step, when level 0 exports the demo set and configures no steps; else unchanged. */
export function withDemoSteps(config: HsdConfig): HsdConfig {
  const demo = !config.parent && Object.keys(config.repos).length === 0 && config.repoNames.includes("iac-driver");
  if (!demo || config.configure.steps.length > 0) return config;
  const step = { ...DEMO_STEP, budgetMs: Math.min(DEMO_STEP.budgetMs, config.budgets.configure) };
  return Object.freeze({ ...config, configure: Object.freeze({ steps: Object.freeze([Object.freeze(step)]) }) });
}
