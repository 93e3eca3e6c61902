// The ordered phase hooks of a child build.
// Imported by: src/nest.

import type { PhaseHook } from "../phase-hook.js";
import { preflightPhase } from "./preflight.js";
import { provisionPhase } from "./provision.js";
import { bootPhase } from "./boot.js";
import { installPhase } from "./install.js";
import { handshakePhase } from "./handshake.js";
import { syncPhase } from "./sync.js";
import { secretsPhase } from "./secrets.js";
import { configurePhase } from "./configure.js";
import { nestPhase } from "./nest.js";
import { leafConfigurePhase } from "./leaf-configure.js";

export const PHASE_HOOKS: readonly PhaseHook[] = Object.freeze([
  preflightPhase, provisionPhase, bootPhase, installPhase, handshakePhase,
  syncPhase, secretsPhase, configurePhase, nestPhase,
]);

/** A leaf (manifest `type: vm`) gets no hsd: created, booted, then configured by this level. */
export const LEAF_HOOKS: readonly PhaseHook[] = Object.freeze([preflightPhase, provisionPhase, bootPhase, leafConfigurePhase]);
