// The structured logger (pino). Only the daemon wiring and the CLI create one;
// every other module receives a Logger injected and derives children with
// `log.child({ level: "l2", phase: "sync" })`. Secret fields are redacted here,
// once, for every log line hsd writes.

import { pino, type Logger as PinoLogger, type DestinationStream } from "pino";

export type Logger = PinoLogger;

/** Field paths whose values never reach a log line. */
export const REDACT_PATHS = [
  "secrets", "*.secrets", "secret", "*.secret", "password", "*.password", "passwords", "*.passwords",
  "token", "*.token", "tokens", "*.tokens", "privateKey", "*.privateKey", "private_key", "*.private_key",
  "yaml", "*.yaml", "authorization", "*.authorization", "headers.authorization", "req.headers.authorization",
];

export interface LoggerOptions {
  level?: string;
  /** Human-readable output (HSD_LOG_PRETTY=1). */
  pretty?: boolean;
  destination?: DestinationStream;
  base?: Record<string, unknown>;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const common = {
    level: opts.level ?? "info",
    base: opts.base ?? {},
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
  };
  if (opts.pretty) {
    return pino({ ...common, transport: { target: "pino-pretty", options: { colorize: true } } });
  }
  return opts.destination ? pino(common, opts.destination) : pino(common);
}

/** A logger that writes nothing, for tests and library callers. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
