// The fake `systemctl` both kinds of simulated VM install: runs hsd.service's
// ExecStart as a background process and answers start/stop/restart/is-active/
// is-failed the way systemd would. Callers supply where things live and how
// ExecStart is launched. Used by sim-guest.ts and sim-vm.ts.

/** Single-quotes a string for sh. */
export const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export interface FakeSystemctl {
  /** sh lines setting $unit, $pidf and anything start_hsd needs. */
  readonly setup: string;
  /** Where `systemctl $*` is appended (already quoted for sh). */
  readonly logFile: string;
  /** Body of start_hsd after the unit check; must write the new pid to "$pidf". */
  readonly start: string;
  /** case arms tried before the standard ones (a rebootable VM's enable and reboot: sim-reboot.ts). */
  readonly extraCases?: string;
}

export function fakeSystemctlScript(o: FakeSystemctl): string {
  return `#!/bin/sh
${o.setup}
echo "systemctl $*" >> ${o.logFile}
running() {
  [ -f "$pidf" ] || return 1
  s=$(sed -n 's/^State:[[:space:]]*\\([A-Z]\\).*/\\1/p' "/proc/$(cat "$pidf")/status" 2>/dev/null)
  [ -n "$s" ] && [ "$s" != Z ]
}
# As systemd does for KillMode=mixed: SIGTERM to the main process, wait for it
# (TimeoutStopSec=10s), then SIGKILL the rest of the group.
stop_hsd() {
  if running; then
    pid=$(cat "$pidf")
    kill -TERM "$pid" 2>/dev/null
    i=0; while running && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL -- "-$pid" 2>/dev/null
  fi
  rm -f "$pidf"
}
start_hsd() {
  [ -f "$unit" ] || { echo "Failed to start hsd.service: Unit hsd.service not found." >&2; exit 5; }
${o.start}
}
# The unit is the first word after the command that is not an option (enable --no-reload hsd).
svc="$2"; [ "\${svc#-}" = "$svc" ] || svc="$3"
case "$1" in
${o.extraCases ?? ""}  daemon-reload|enable|disable) exit 0 ;;
  stop) [ "$svc" = hsd ] && stop_hsd; exit 0 ;;
  start) [ "$svc" = hsd ] && { running || start_hsd; }; exit 0 ;;
  restart) [ "$svc" = hsd ] && { stop_hsd; start_hsd; }; exit 0 ;;
  is-active) shift; qt=; [ "$1" = --quiet ] && { qt=1; shift; }
    if [ "$1" = hsd ] && running; then s=active; elif [ "$1" = hsd ] && [ -f "$pidf" ]; then s=failed; else s=inactive; fi
    [ -n "$qt" ] || echo "$s"; [ "$s" = active ] ;;
  is-failed) shift; [ "$1" = --quiet ] && shift; [ "$1" = hsd ] && [ -f "$pidf" ] && ! running ;;
  *) exit 0 ;;
esac
`;
}
