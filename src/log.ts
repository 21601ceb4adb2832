import { pino, type Logger as PinoLogger, type LevelWithSilent } from "pino";

export type Logger = PinoLogger;
export type LogLevel = LevelWithSilent;
export const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

import pretty from "pino-pretty";

export type LogFormat = "auto" | "json" | "pretty";

/**
 * Structured logs: one JSON object per line on stdout. "pretty" (or "auto" on a terminal) renders the same
 * events readably for a person watching the daemon.
 */
export function createLogger(level: LogLevel = "info", destination?: NodeJS.WritableStream, format: LogFormat = "json"): Logger {
  const options = { level, base: { service: "kekahyde" }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label: string) => ({ level: label }) } };
  if (destination) return pino(options, destination);
  const human = format === "pretty" || (format === "auto" && process.stdout.isTTY === true);
  if (human) return pino(options, pretty({ colorize: true, ignore: "service,pid,hostname", translateTime: "HH:MM:ss.l", sync: true }));
  return pino(options, pino.destination({ sync: false }));
}
