// Test-only preload (NODE_OPTIONS=--require): an hsd run with it takes
// HSD_SLOW_EXIT_MS longer to exit, spinning in its exit handler, as a daemon
// on a loaded host may after it has reported a failure. Other processes
// (hsctl) are untouched.
"use strict";
const ms = Number(process.env.HSD_SLOW_EXIT_MS || 0);
if (ms > 0 && process.argv.some((a) => a.endsWith("/daemon/hsd.js"))) {
  process.on("exit", () => { const end = Date.now() + ms; while (Date.now() < end) { /* spin: exit handlers must be synchronous */ } });
}
