// The structured logger (pino). Only the daemon wiring and the CLI create one;
// every other module receives a Logger injected and derives children with
// `log.child({ level: "l2", phase: "sync" })`. Secret fields are redacted here,
// once, for every log line hsd writes.
// Imported by: anyone.

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
  /** Default: JSON lines on stdout. prettyDestination() for human-readable output. */
  destination?: DestinationStream;
  base?: Record<string, unknown>;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const common = {
    level: opts.level ?? "info",
    base: opts.base ?? {},
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
  };
  return opts.destination ? pino(common, opts.destination) : pino(common);
}

/**
 * One destination that writes every line (already redacted) to each of
 * `streams`: the daemon's stdout or pretty stream, and its log ring.
 */
export function teeDestination(...streams: DestinationStream[]): DestinationStream {
  return pino.multistream(streams.map((stream) => ({ stream, level: "trace" as const })));
}

/**
 * Human-readable output on stdout (HSD_LOG_PRETTY=1). pino-pretty runs in
 * this thread as a stream, not as a pino transport: a transport's worker file
 * is resolved from pino's own directory, which the bundled hsd does not have.
 * Loaded only when asked for (it costs start-up time).
 */
export async function prettyDestination(): Promise<DestinationStream> {
  const { default: pretty } = await import("pino-pretty");
  return pretty({ colorize: true, sync: true });
}

/** A logger that writes nothing, for tests and library callers. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
