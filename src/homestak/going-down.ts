// Whether the machine a level runs on is going down (a reboot or poweroff is
// under way), as the step runner asks it when hsd is stopped, or a step ends
// badly, while a configure step runs: a step may reboot the machine itself
// (homestak's pve-config runs `systemctl reboot` and sleeps until it is killed),
// and that step's death is then the reboot, not a failure. The probe itself is
// injected (systemd's state, or a local level's marker; src/daemon/going-down-probe.ts).
// Imported by: src/daemon, src/homestak, src/level.

import type { Logger } from "../log/logger.js";

/** Answers whether the machine is going down; may be slow (a systemctl call) and is bounded here. */
export type GoingDownProbe = () => Promise<boolean>;

/** The reason journaled and announced for a step the machine's own reboot interrupted. */
export const SYSTEM_REBOOT_REASON = "the system is rebooting (hsd was stopped while this step ran)";

/**
 * One answer shared by everyone asking at about the same moment (hsd's stop
 * and the step's exit race each other). A yes is kept: a machine going down
 * does not come back up in this process. A no, an error or no answer within
 * `timeoutMs` is a no, asked afresh next time.
 */
export class GoingDown {
  private known = false;
  private asking: Promise<boolean> | undefined;

  constructor(private readonly probe: GoingDownProbe, private readonly timeoutMs: number, private readonly log: Logger) {}

  /** A yes was heard already (no need to ask again). */
  get isKnown(): boolean {
    return this.known;
  }

  ask(): Promise<boolean> {
    if (this.known) return Promise.resolve(true);
    this.asking ??= this.bounded().then((yes) => {
      this.asking = undefined;
      if (yes) this.known = true;
      return yes;
    });
    return this.asking;
  }

  private bounded(): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn({ timeoutMs: this.timeoutMs }, "no answer whether the machine is going down; taking it as no");
        resolve(false);
      }, this.timeoutMs);
      this.probe().then((yes) => { clearTimeout(timer); resolve(yes); }, (err: unknown) => {
        clearTimeout(timer);
        this.log.warn({ err }, "asking whether the machine is going down failed; taking it as no");
        resolve(false);
      });
    });
  }
}
