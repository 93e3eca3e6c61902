// The hsctl command registry: one line per command, in help order.
// Imported by: src/cli.

import type { Command } from "../command.js";
import { statusCommand } from "./status.js";
import { nestCommand } from "./nest.js";
import { syncCommand } from "./sync.js";
import { destroyCommand } from "./destroy.js";
import { doctorCommand } from "./doctor.js";
import { logsCommand } from "./logs.js";
import { accessCommand } from "./access.js";
import { versionCommand } from "./version.js";

export const COMMANDS: readonly Command[] = [
  nestCommand,
  statusCommand,
  syncCommand,
  destroyCommand,
  doctorCommand,
  logsCommand,
  accessCommand,
  versionCommand,
];
