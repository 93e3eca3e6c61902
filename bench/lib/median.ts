// The median the benches judge their goals on: wall times on a shared 2-core
// VM vary run to run, so a goal is read off the middle of several runs.
// Imported by: bench/nest.ts, bench/sync-wave.ts, bench/pve-level-overhead.ts.

/** The middle value (the upper of the two middle ones for an even count). */
export function median(xs: readonly number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}
