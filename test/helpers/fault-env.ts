// Test helper: the environment that makes a spawned hsd (and every level it
// spawns, which inherit it) load the fault preload when a test sets HSD_FAULTS.
import { pathToFileURL } from "node:url";

const PRELOAD = pathToFileURL(new URL("./fault-preload.mjs", import.meta.url).pathname).href;

/** `env` plus NODE_OPTIONS=--import the fault preload, when env (or this process) sets HSD_FAULTS. */
export function withFaultPreload<E extends Record<string, string | undefined>>(env: E): E {
  if (!env.HSD_FAULTS) return env;
  const opts = env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? "";
  if (opts.includes(PRELOAD)) return env;
  return { ...env, NODE_OPTIONS: `${opts} --import=${PRELOAD}`.trim() };
}
