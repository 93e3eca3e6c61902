// Watch mode (config `sync: { mode: watch, debounce: 300ms }`): level 0's hsd
// watches the operator's checkouts and runs the recursive sync wave by itself,
// debounced. Children learn of it the same way as for `hsctl sync`: their
// parent calls Sync over their gRPC tunnel; nobody polls. Started by the
// daemon's level wiring only.
//
// How it watches: fs.watch({recursive}) does not exist on Linux in Node 20, so
// it arms one non-recursive inotify watch per directory that matters: the
// checkout's git dir (HEAD, index: commits, staging, checkouts), its refs/heads
// tree (branch moves), and every directory that holds a tracked file (edits,
// new untracked files next to them). The set is rebuilt after every sync, so a
// directory created since is picked up (its creation fires on its parent).
// It is bounded (MAX_DIRS per checkout): beyond it, deeper directories go
// unwatched and are caught by the next event elsewhere or a manual sync; this
// is logged. Events on *.lock files are git's own churn and are ignored.
// Imported by: src/daemon.

import { watch, type FSWatcher } from "node:fs";
import { readdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { Logger } from "../log/logger.js";
import type { EventSink } from "../domain/events.js";
import { runGit } from "../git/run-git.js";

/** Per checkout; a homestak repo has a few dozen directories. */
export const MAX_DIRS = 2000;

export interface SyncWatchOptions {
  /** name -> operator checkout. */
  readonly checkouts: Readonly<Record<string, string>>;
  readonly debounceMs: number;
  readonly log: Logger;
  /** Runs the recursive sync wave; events go to `sink`. */
  readonly sync: (sink: EventSink, signal: AbortSignal) => Promise<void>;
}

export interface SyncWatch {
  /** Resolves after the watchers are armed the first time (tests, logs). */
  readonly ready: Promise<void>;
  /** Number of waves run so far. */
  runs(): number;
  close(): Promise<void>;
}

const ENV = { GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1", GIT_OPTIONAL_LOCKS: "0" };

/** The directories to watch for one checkout (bounded). */
async function watchDirs(checkout: string, log: Logger): Promise<string[]> {
  const gd = await runGit(["rev-parse", "--git-dir"], { cwd: checkout, env: ENV, allowFail: true });
  if (gd.code !== 0) return [checkout];
  const gitDir = resolve(checkout, gd.stdout.toString().trim());
  const dirs = new Set<string>([checkout, gitDir]);
  const refs = async (d: string): Promise<void> => {
    dirs.add(d);
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) await refs(join(d, e.name));
  };
  await refs(join(gitDir, "refs", "heads"));
  const files = (await runGit(["ls-files", "-z"], { cwd: checkout, env: ENV, allowFail: true })).stdout.toString("utf8").split("\0").filter(Boolean);
  for (const f of files) {
    for (let d = dirname(f); d !== "." && !dirs.has(join(checkout, d)); d = dirname(d)) {
      if (dirs.size >= MAX_DIRS) {
        log.warn({ checkout, max: MAX_DIRS }, "too many directories to watch; deeper ones are not watched");
        return [...dirs];
      }
      dirs.add(join(checkout, d));
    }
  }
  return [...dirs];
}

export function startSyncWatch(o: SyncWatchOptions): SyncWatch {
  const log = o.log.child({ sub: "sync-watch" });
  const ac = new AbortController();
  let watchers: FSWatcher[] = [];
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let pending = false;
  let runs = 0;
  let closed = false;

  const sink: EventSink = (ev) => {
    const level = ev.levelPath.join("/");
    if (ev.kind === "failed") log.warn({ level, code: ev.failure?.code, msg: ev.failure?.message }, "watch sync: level failed");
    else if (ev.kind === "finished") log.info({ level, durationMs: ev.durationMs, bytes: ev.bytes, changes: ev.message }, "watch sync: level synced");
  };

  const arm = async (): Promise<void> => {
    const next: FSWatcher[] = [];
    for (const checkout of Object.values(o.checkouts)) {
      for (const d of await watchDirs(checkout, log)) {
        try {
          const w = watch(d, { persistent: false }, (_type, file) => {
            if (typeof file === "string" && file.endsWith(".lock")) return;
            trigger();
          });
          w.on("error", () => w.close()); // the directory went away; the next re-arm drops it
          next.push(w);
        } catch (err) {
          // ENOENT: gone since listed; ENOSPC: inotify watch limit reached.
          log.debug({ dir: d, code: (err as NodeJS.ErrnoException).code }, "cannot watch directory");
        }
      }
    }
    if (closed) { for (const w of next) w.close(); return; }
    for (const w of watchers) w.close();
    watchers = next;
  };

  const run = (): void => {
    if (closed) return;
    if (running) { pending = true; return; }
    runs++;
    const t0 = performance.now();
    running = o.sync(sink, ac.signal)
      .catch((err) => log.warn({ err }, "watch sync failed"))
      .then(() => log.info({ ms: Math.round(performance.now() - t0) }, "watch sync wave done"))
      .then(arm)
      .catch((err) => log.warn({ err }, "re-arming the watchers failed"))
      .finally(() => {
        running = undefined;
        if (pending) { pending = false; trigger(); }
      });
  };

  function trigger(): void {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(run, o.debounceMs);
  }

  const ready = arm().then(() => log.info({ dirs: watchers.length, debounceMs: o.debounceMs }, "watching the operator's checkouts"));
  return {
    ready,
    runs: () => runs,
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const w of watchers) w.close();
      watchers = [];
      ac.abort();
      await running?.catch(() => undefined);
    },
  };
}
