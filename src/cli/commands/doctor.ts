// `hsctl doctor`: a build's preflight checks (the level's images, then the
// provider's, with safe repairs), and nothing else. Registered in commands/index.ts.
// Imported by: src/cli/commands.

import { InvalidArgumentError } from "../../domain/errors.js";
import type { Command } from "../command.js";
import { ensureDaemon } from "./ensure-daemon.js";
import { isProviderName, PROVIDER_NAMES } from "../../domain/providers.js";
import { ISOLATION_MODES, isIsolationMode } from "../../providers/local/local-options.js";
import { LEVEL_HELP, LEVEL_OPTION, levelOption } from "../level-option.js";

const MARK = { ok: "ok      ", repaired: "repaired", failed: "FAILED  " } as const;

export const doctorCommand: Command = {
  name: "doctor",
  summary: "run the preflight checks (and safe repairs) only",
  help: `Usage: hsctl doctor [--level PATH] [--provider local|pve] [--isolation process|netns] [--json]

Runs the checks a build's preflight phase runs, on the level the local hsd
serves: each image under images: (present, readable, its sha256), then the
provider's. Prints each as ok, repaired or FAILED with a hint. Safe repairs
are made (on PVE: snippets content on the storage, the pveproxy certificate);
nothing is built. Exit 1 if any check failed.

Options:
${LEVEL_HELP}
  --provider NAME    local or pve (default: the level's configured provider)
  --isolation MODE   process or netns (netns adds the namespace checks)
  --json             the checks as a JSON array

Examples:
  hsctl doctor
  sudo hsctl doctor --isolation netns
  hsctl doctor --provider pve --json
  hsctl doctor --level l0/l1
`,
  options: { provider: { type: "string" }, isolation: { type: "string" }, json: { type: "boolean" }, ...LEVEL_OPTION },
  async run(args, io) {
    const levelPath = levelOption(args.values);
    const provider = (args.values.provider as string | undefined) ?? "";
    if (provider && !isProviderName(provider)) throw new InvalidArgumentError(`--provider must be ${PROVIDER_NAMES.join(" or ")}, got ${JSON.stringify(provider)}`);
    const iso = args.values.isolation as string | undefined;
    if (iso !== undefined && !isIsolationMode(iso)) throw new InvalidArgumentError(`--isolation must be ${ISOLATION_MODES.join(" or ")}, got ${JSON.stringify(iso)}`);
    const conn = await ensureDaemon(args, io, { start: false });
    const checks = await conn.nest.doctor({ provider, ...(iso !== undefined ? { options: { isolation: iso } } : {}), ...(levelPath ? { levelPath } : {}) }, { signal: io.signal, deadlineMs: 120_000 });
    if (args.values.json) io.out(`${JSON.stringify(checks)}\n`);
    else {
      for (const c of checks) {
        io.out(`${MARK[c.result]}  ${c.name}${c.detail ? `: ${c.detail}` : ""}\n`);
        if (c.result !== "ok" && c.hint) io.out(`          hint: ${c.hint}\n`);
      }
    }
    return checks.some((c) => c.result === "failed") ? 1 : 0;
  },
};
