// install: put hsd and its config on the child, start it, and wait for it to
// report ready (event-driven; the provider resolves on the child's signal).

import type { PhaseHook } from "../phase-hook.js";

export const installPhase: PhaseHook = {
  name: "install",
  async run(r) {
    const { handle, endpoint } = await r.provider.install(r.rec.handle!, {
      name: r.rec.name,
      depth: r.self.depth + 1,
      parentHost: r.self.sshAdvertiseHost,
      parentPort: r.self.sshPort,
      parentHostKeyFingerprint: r.self.hostKeyFingerprint,
      parentPublicKey: r.self.publicKey,
      repoNames: r.config.repoNames,
      extraConfig: childConfig(r.config),
    }, { signal: r.signal, log: r.log, emit: r.emit });
    r.rec.handle = handle;
    r.rec.endpoint = endpoint;
  },
};

/** The settings a child inherits from its parent, as hsd.yaml keys. */
function childConfig(c: import("../../config/config.js").HsdConfig): Record<string, unknown> {
  const sec = (ms: number) => `${ms}ms`;
  const budgets: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.budgets)) budgets[k] = sec(v);
  return {
    timeouts: {
      connect: sec(c.timeouts.connectMs), command: sec(c.timeouts.commandMs),
      health_poll: sec(c.timeouts.healthPollMs), shutdown: sec(c.timeouts.shutdownMs),
    },
    budgets,
    secrets: { pass_down: [...c.secrets.passDown] },
    secret_patterns: [...c.secretPatterns],
    nest: {
      max_parallel: c.nest.maxParallel, max_depth: c.nest.maxDepth, max_width: c.nest.maxWidth, subnet_base: c.nest.subnetBase,
    },
    log: { level: c.log.level },
  };
}
