// Renders a stream of build events for the operator: a live tree on a terminal,
// plain lines when piped (every phase change and every configure step output
// line; at most one other progress or log line per level per second), JSON Lines with --json (every event), and a closing
// level × phase timing table (actual against budget), as in the seed's
// "Timing Analysis".
// Imported by: src/cli/commands.

import { isStepOutput, type LevelEvent } from "../domain/events.js";
import { PHASES } from "../domain/phases.js";
import { hintFor } from "../domain/hints.js";
import { progressThrottle, type ProgressThrottle } from "../util/progress-throttle.js";

/** Piped output: a level's progress and log lines go out at most this often (phase changes always do). */
export const PLAIN_NOTE_INTERVAL_MS = 1000;

export type ViewMode = "tty" | "plain" | "json";

interface LevelRow {
  path: string;
  phase?: string;
  kind?: string;
  phaseStarted?: number;
  durations: Map<string, { ms: number; kind: string; budgetMs?: number }>;
  failure?: LevelEvent["failure"];
  /** The running phase's latest log line (a configure step's output, live). */
  last?: string;
}

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

export function fmtDuration(ms: number | undefined): string {
  if (ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return s ? `${m}m${s}s` : `${m}m`;
}

/** Event to a JSON-safe object (stable field names for scripts). */
export function eventJson(ev: LevelEvent): Record<string, unknown> {
  return {
    level: ev.levelPath.join("/"), levelPath: ev.levelPath, phase: ev.phase, kind: ev.kind, time: new Date(ev.time).toISOString(),
    ...(ev.durationMs !== undefined ? { durationMs: ev.durationMs } : {}),
    ...(ev.budgetMs !== undefined ? { budgetMs: ev.budgetMs } : {}),
    ...(ev.failure ? { failure: { ...ev.failure, hint: ev.failure.hint || hintFor(ev.failure.code) } } : {}),
    ...(ev.message ? { message: ev.message } : {}),
    ...(ev.progress ? { progress: ev.progress } : {}),
    ...(ev.repos ? { repos: ev.repos } : {}),
    ...(ev.bytes !== undefined ? { bytes: ev.bytes } : {}),
  };
}

export class NestView {
  private readonly rows = new Map<string, LevelRow>();
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;
  private frame = 0;
  /** The latest failed event per level: bounded by the tree's size, never by the stream's length. */
  private readonly failedByLevel = new Map<string, LevelEvent>();
  /** Plain mode's progress/log lines, one per level per interval; the rest are dropped (--json keeps them). */
  private readonly notes: ProgressThrottle<LevelEvent>;

  constructor(private readonly mode: ViewMode, private readonly out: NodeJS.WritableStream = process.stdout, private readonly now: () => number = Date.now) {
    this.notes = progressThrottle<LevelEvent>({
      intervalMs: PLAIN_NOTE_INTERVAL_MS, now: () => this.now(), key: (ev) => ev.levelPath.join("/"),
      isFinal: () => false, emit: (ev) => this.out.write(`${plainLine(ev)}\n`),
    });
    if (mode === "tty") {
      this.timer = setInterval(() => { this.frame++; this.redraw(); }, 100);
      this.timer.unref();
    }
  }

  onEvent(ev: LevelEvent): void {
    const path = ev.levelPath.join("/");
    let row = this.rows.get(path);
    if (!row) { row = { path, durations: new Map() }; this.rows.set(path, row); }
    if (ev.kind === "started") { row.phase = ev.phase; row.kind = "running"; row.phaseStarted = this.now(); row.last = undefined; }
    if (ev.kind === "log" && ev.message) row.last = ev.message.split("\n").pop();
    // A level's own reboot is part of its running phase: the row stays on it, saying so.
    if (ev.kind === "rebooting") row.last = `rebooting: ${ev.message ?? ""}`;
    if (ev.kind === "finished" || ev.kind === "skipped" || ev.kind === "failed") {
      row.phase = ev.phase; row.kind = ev.kind;
      row.durations.set(ev.phase, { ms: ev.durationMs ?? 0, kind: ev.kind, budgetMs: ev.budgetMs });
    }
    if (ev.kind === "failed") { row.failure = ev.failure; this.failedByLevel.set(path, ev); }
    if (this.mode === "json") this.out.write(`${JSON.stringify(eventJson(ev))}\n`);
    else if (this.mode === "plain") {
      // A configure step's own output always prints; hsd's progress and notes are thinned.
      if (ev.kind === "progress" || (ev.kind === "log" && !isStepOutput(ev))) this.notes(ev);
      else this.out.write(`${plainLine(ev)}\n`);
    }
    else this.redraw();
  }

  /** One failed event per level that failed (its latest), for the closing summary. */
  get failures(): LevelEvent[] {
    return [...this.failedByLevel.values()];
  }

  private redraw(): void {
    if (this.mode !== "tty") return;
    const lines = [...this.rows.values()].sort((a, b) => a.path.localeCompare(b.path)).map((r) => this.treeLine(r));
    let s = this.drawn > 0 ? `\x1b[${this.drawn}F` : "";
    for (const l of lines) s += `\x1b[2K${l}\n`;
    this.out.write(s);
    this.drawn = lines.length;
  }

  private treeLine(r: LevelRow): string {
    const depth = r.path.split("/").length - 1;
    const name = `${"  ".repeat(depth)}${r.path.split("/").pop()}`.padEnd(14);
    const done = [...r.durations.values()].reduce((s, d) => s + d.ms, 0);
    if (r.kind === "failed") return `${name} ✗ ${r.phase} failed: ${r.failure?.code ?? ""} ${(r.failure?.message ?? "").split("\n")[0]}`;
    if (r.kind === "running") {
      const spin = SPINNER[this.frame % SPINNER.length];
      const line = `${name} ${spin} ${(r.phase ?? "").padEnd(10)} ${fmtDuration(this.now() - (r.phaseStarted ?? this.now()))}`;
      return r.last ? `${line}  ${r.last.slice(0, 80)}` : line;
    }
    if (r.phase === "nest" && (r.kind === "finished")) return `${name} ✓ ready ${fmtDuration(done)}`;
    return `${name} · ${(r.phase ?? "").padEnd(10)} ${r.kind ?? ""} ${fmtDuration(done)}`;
  }

  /** Stops the live view and prints the level × phase table. */
  finish(): void {
    if (this.timer) clearInterval(this.timer);
    this.redraw();
    if (this.mode === "json") return;
    this.out.write(`\n${timingTable([...this.rows.values()])}\n`);
  }
}

function plainLine(ev: LevelEvent): string {
  const parts = [ev.levelPath.join("/").padEnd(14), ev.phase.padEnd(10), ev.kind.padEnd(9)];
  if (ev.durationMs !== undefined) parts.push(fmtDuration(ev.durationMs));
  if (ev.budgetMs !== undefined && ev.kind !== "progress") parts.push(`(budget ${fmtDuration(ev.budgetMs)})`);
  if (ev.failure) parts.push(`${ev.failure.code}: ${ev.failure.message}`);
  const lines = ev.message ? ev.message.split("\n") : [];
  if (lines.length > 0) parts.push(lines[0]!);
  if (ev.progress && ev.progress.total) parts.push(`${ev.progress.done}/${ev.progress.total} ${ev.progress.unit}`);
  // A batch of a step's output lines: each on its own line, under the same level and phase.
  const head = parts.join(" ").trimEnd();
  if (lines.length <= 1) return head;
  const prefix = `${parts.slice(0, 3).join(" ")} `;
  return [head, ...lines.slice(1).map((l) => `${prefix}${l}`.trimEnd())].join("\n");
}

function timingTable(rows: LevelRow[]): string {
  const built = rows.filter((r) => r.durations.size > 0 && PHASES.some((p) => r.durations.has(p))).sort((a, b) => a.path.localeCompare(b.path));
  if (built.length === 0) return "";
  const cols = PHASES.filter((p) => built.some((r) => r.durations.has(p)));
  const header = ["level", ...cols, "total"];
  const budgetRow = ["(budget)", ...cols.map((p) => {
    const b = built.map((r) => r.durations.get(p)?.budgetMs).find((x) => x !== undefined);
    return b ? fmtDuration(b) : "";
  }), ""];
  const body = built.map((r) => {
    let total = 0;
    const cells = cols.map((p) => {
      const d = r.durations.get(p);
      if (!d) return "";
      total += d.ms;
      if (d.kind === "skipped") return "skip";
      if (d.kind === "failed") return `FAIL ${fmtDuration(d.ms)}`;
      return d.budgetMs && d.ms > d.budgetMs ? `${fmtDuration(d.ms)}!` : fmtDuration(d.ms);
    });
    return [r.path, ...cells, fmtDuration(total)];
  });
  const all = [header, budgetRow, ...body];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => `| ${r.map((c, i) => (c ?? "").padEnd(widths[i]!)).join(" | ")} |`;
  const sep = `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`;
  return [line(header), sep, ...all.slice(1).map(line)].join("\n");
}
