#!/usr/bin/env node
// Installed entry point of the hsd daemon; the code lives in src/daemon/hsd.ts.
import "../dist/daemon/hsd.js";
