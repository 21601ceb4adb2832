import { pino, type Logger as PinoLogger, type LevelWithSilent } from "pino";

export type Logger = PinoLogger;
export type LogLevel = LevelWithSilent;
export const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Structured logs: one JSON object per line on stdout. */
export function createLogger(level: LogLevel = "info", destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, base: { service: "kekahyde" }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    destination ?? pino.destination({ sync: false }),
  );
}
