import { pino, type Logger as PinoLogger, type LevelWithSilent } from "pino";
import { prettyFactory } from "pino-pretty";

export type Logger = PinoLogger;
export type LogLevel = LevelWithSilent;
export const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export type LogFormat = "auto" | "json" | "pretty";

/** What a log destination may hold for a reader that does not keep up; a line that would pass it is dropped. */
const LOG_BUFFER_BYTES = 1024 * 1024;
/** How long flushing at exit may wait for the reader. */
const LOG_FLUSH_TIMEOUT_MS = 100;

let droppedInProcess = 0;

/** Log lines dropped by every LogDestination in this process (for `kekahyde_log_lines_dropped_total`). */
export function logLinesDropped(): number {
  return droppedInProcess;
}

export interface LogDestinationOptions {
  /** Bytes that may wait in the target stream's buffer (default LOG_BUFFER_BYTES). */
  maxBufferedBytes?: number;
  /** The most flush() waits for buffered lines to be written (default LOG_FLUSH_TIMEOUT_MS). */
  flushTimeoutMs?: number;
  /** Render each JSON line for people (pino-pretty's formatter, colours on). */
  pretty?: boolean;
  /** Called (outside the write that noticed it) with how many lines were dropped, once lines go through again. */
  onDropped?: (lines: number) => void;
}

/**
 * A pino destination that never holds the daemon. Lines go to a stream that does not block the thread
 * (process.stdout: on Linux a pipe or a terminal is written without blocking, and what cannot be written
 * yet waits in the stream's buffer). While that buffer holds more than `maxBufferedBytes`, new lines are
 * dropped and counted instead of queued; once the stream fails (EPIPE: the reader went away) every line
 * is. flush() waits for the buffer to empty at most `flushTimeoutMs`.
 *
 * It replaces pino.destination (sonic-boom), whose exit handler calls flushSync: that loops on
 * `Atomics.wait` for as long as a write fails, EAGAIN from a stalled pipe and EPIPE alike, so SIGTERM
 * never completed while the log reader was stalled. Its buffer had no bound either.
 */
export class LogDestination {
  #target: NodeJS.WritableStream & { writableLength: number };
  #maxBuffered: number;
  #flushTimeoutMs: number;
  #format: ((line: string) => string) | null;
  #onDropped: ((lines: number) => void) | undefined;
  #failed = false;
  #dropped = 0;
  #unreported = 0;
  #reportScheduled = false;

  constructor(target: NodeJS.WritableStream & { writableLength: number } = process.stdout, options: LogDestinationOptions = {}) {
    this.#target = target;
    this.#maxBuffered = options.maxBufferedBytes ?? LOG_BUFFER_BYTES;
    this.#flushTimeoutMs = options.flushTimeoutMs ?? LOG_FLUSH_TIMEOUT_MS;
    this.#format = options.pretty ? prettyFactory({ colorize: true, ignore: "service,pid,hostname", translateTime: "HH:MM:ss.l" }) : null;
    this.#onDropped = options.onDropped;
    // Without a listener an EPIPE would be thrown as an uncaught exception.
    target.on("error", () => {
      this.#failed = true;
    });
  }

  /** Lines dropped by this destination. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Queues one line, or drops it; always returns true, so that pino never waits. */
  write(line: string): boolean {
    if (this.#failed) return this.#drop();
    const text = this.#format ? this.#format(line) : line;
    if (this.#target.writableLength + text.length > this.#maxBuffered) return this.#drop();
    try {
      this.#target.write(text);
    } catch {
      this.#failed = true;
      return this.#drop();
    }
    if (this.#unreported > 0 && this.#onDropped && !this.#reportScheduled) {
      this.#reportScheduled = true;
      setImmediate(() => {
        this.#reportScheduled = false;
        const lines = this.#unreported;
        this.#unreported = 0;
        if (lines > 0) this.#onDropped?.(lines);
      });
    }
    return true;
  }

  /** Calls back once the buffered lines are written, or after flushTimeoutMs: never waits on the reader for longer. */
  flush(callback: (err?: Error) => void = () => {}): void {
    const deadline = Date.now() + this.#flushTimeoutMs;
    const check = () => {
      if (this.#failed || this.#target.writableLength === 0 || Date.now() >= deadline) callback();
      else setTimeout(check, 5);
    };
    check();
  }

  #drop(): true {
    this.#dropped += 1;
    this.#unreported += 1;
    droppedInProcess += 1;
    return true;
  }
}

/**
 * A terminal is written synchronously by Node on POSIX, so a terminal that stops reading (Ctrl-S, a frozen
 * emulator) would stop the daemon's thread. libuv opened our own file description of the terminal, so
 * making it non-blocking does not affect the shell, and Node restores the flags at exit.
 */
function unblockTerminal(stream: NodeJS.WriteStream): void {
  if (!stream.isTTY) return;
  const handle = (stream as unknown as { _handle?: { setBlocking?: (blocking: boolean) => number } })._handle;
  handle?.setBlocking?.(false);
}

/**
 * Structured logs: one JSON object per line on stdout. "pretty" (or "auto" on a terminal) renders the same
 * events readably for a person watching the daemon. Logging never blocks a request or the shutdown: see
 * LogDestination. A given `destination` (tests) is written as it is.
 */
export function createLogger(level: LogLevel = "info", destination?: NodeJS.WritableStream, format: LogFormat = "json"): Logger {
  const options = { level, base: { service: "kekahyde" }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label: string) => ({ level: label }) } };
  if (destination) return pino(options, destination);
  const human = format === "pretty" || (format === "auto" && process.stdout.isTTY === true);
  unblockTerminal(process.stdout);
  let logger: Logger | undefined = undefined;
  const stdout = new LogDestination(process.stdout, {
    pretty: human,
    onDropped: (lines) => logger?.warn({ event: "log_lines_dropped", lines, total: logLinesDropped() }, `${lines} log lines were dropped: stdout was not read fast enough`),
  });
  logger = pino(options, stdout);
  return logger;
}
