#!/usr/bin/env -S node --max-semi-space-size=1
// The flag is src/config/node-flags.ts's HSD_NODE_FLAGS (a shebang cannot import it).
// Installed entry point of the hsd daemon; the code lives in src/daemon/hsd.ts.
import "../dist/daemon/hsd.js";
