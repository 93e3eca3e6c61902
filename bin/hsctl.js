#!/usr/bin/env node
// Installed entry point of the hsctl CLI; the code lives in src/cli/hsctl.ts.
import "../dist/cli/hsctl.js";
