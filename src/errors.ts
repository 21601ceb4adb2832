/**
 * Every failure the daemon reports is a KekahydeError with a code. The code, not the message, decides the
 * HTTP status (see src/server/errorMapping.ts), so the machine and the engine never think in HTTP terms.
 */
export type ErrorCode =
  | "BAD_REQUEST"
  | "INVALID_JSON"
  | "MODEL_NOT_FOUND"
  | "UNKNOWN_MODEL"
  | "MODEL_INVALID"
  | "MODEL_LOADING"
  | "MODEL_UNLOADING"
  | "BUSY"
  | "NO_MODEL"
  | "PROMPT_TOO_LONG"
  | "ENGINE_FAILURE"
  | "ENGINE_CRASHED"
  | "ENGINE_TIMEOUT"
  | "ROUTE_NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "SHUTTING_DOWN"
  | "QUEUE_FULL"
  | "QUEUE_CLEARED"
  | "JOB_STOPPED"
  | "NOT_SUPPORTED"
  | "CLIENT_CLOSED"
  | "UNAUTHORIZED"
  | "FORBIDDEN_HOST"
  | "FORBIDDEN_ORIGIN"
  | "MODEL_FORBIDDEN"
  | "PAYLOAD_TOO_LARGE"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "RATE_LIMITED"
  | "INSUFFICIENT_MEMORY"
  | "INTERNAL";

export class KekahydeError extends Error {
  override name = "KekahydeError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** Failures of the engine itself, not of the request: after one, nothing can run on the model. */
export const ENGINE_FAILURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["ENGINE_FAILURE", "ENGINE_CRASHED", "ENGINE_TIMEOUT"]);
/** Of those, the ones where the engine's process ended: it crashed, or was stopped for a time limit. */
export const ENGINE_LOSSES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["ENGINE_CRASHED", "ENGINE_TIMEOUT"]);

export const isKekahydeError = (e: unknown): e is KekahydeError => e instanceof KekahydeError;

/** Wraps anything thrown by a dependency into a KekahydeError, keeping a known one as it is. */
export function toKekahydeError(e: unknown, code: ErrorCode = "INTERNAL", prefix?: string): KekahydeError {
  if (isKekahydeError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new KekahydeError(code, prefix ? `${prefix}: ${message}` : message);
}
