#!/usr/bin/env node
// Installed entry point of the hsd daemon; the code lives in src/daemon/hsd.ts.
// No node flags here: hsd's entry sets its V8 flags itself (src/config/node-flags.ts).
import "../dist/daemon/hsd.js";
