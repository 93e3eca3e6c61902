// A PVE level made from an image without Proxmox VE (plain Debian 13) installs
// it in its configure, as homestak's pve-config scenario does (ensure_pve:
// skip if pveproxy runs; else kernel, reboot, packages). That install is a
// configure step run before the others and before the level sets itself up as
// a node (which needs the API): homestak's own scenario from the synced
// iac-driver, rebooting through hsd's protocol (src/homestak/step-reboot.ts).
// Used through the provider registry's `systemInstall`.
// Imported by: src/providers.

import { connect } from "node:net";
import type { ConfigureStep, HsdConfig } from "../../config/config.js";
import { pveConfigOf } from "./pve-config.js";
import { PVE_INSTALL_STEP_NAME } from "../../config/homestak-config.js";


/** How long "does pveproxy answer" may take: a local connect, refused at once when nothing listens. */
const PROBE_MS = 3_000;

export interface SystemInstall {
  /** True while this level lacks what the install puts there (pveproxy does not answer). */
  needed(signal: AbortSignal): Promise<boolean>;
  /** The step that installs it. */
  readonly step: ConfigureStep;
}

/** The install of a PVE level, or undefined when this level is no PVE node. */
export function pveSystemInstall(config: HsdConfig, probe: (host: string, port: number, signal: AbortSignal) => Promise<boolean> = tcpAnswers): SystemInstall | undefined {
  const pve = pveConfigOf(config);
  if (!pve || !config.parent) return undefined;
  const url = new URL(pve.url);
  const port = Number(url.port || 443);
  const step: ConfigureStep = Object.freeze({
    name: PVE_INSTALL_STEP_NAME,
    run: Object.freeze(["./run.sh", "scenario", "run", "pve-config", "--local"]),
    cwd: "iac-driver",
    env: Object.freeze({}),
    budgetMs: config.budgets.configure,
    user: "",
    when: Object.freeze({}),
  });
  return { step, needed: async (signal) => !(await probe(url.hostname, port, signal)) };
}

/** Does something accept TCP connections at host:port (bounded by PROBE_MS)? */
export function tcpAnswers(host: string, port: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean) => { clearTimeout(t); signal.removeEventListener("abort", onAbort); s.destroy(); resolve(ok); };
    const onAbort = () => done(false);
    const t = setTimeout(() => done(false), PROBE_MS);
    signal.addEventListener("abort", onAbort, { once: true });
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}
