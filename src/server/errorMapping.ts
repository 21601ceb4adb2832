import type { ErrorCode } from "../errors.ts";

/** The one place where error codes become HTTP statuses. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  INVALID_JSON: 400,
  PROMPT_TOO_LONG: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN_HOST: 403,
  FORBIDDEN_ORIGIN: 403,
  MODEL_FORBIDDEN: 403,
  MODEL_NOT_FOUND: 404,
  UNKNOWN_MODEL: 404,
  ROUTE_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  MODEL_LOADING: 409,
  MODEL_UNLOADING: 409,
  BUSY: 409,
  NO_MODEL: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  MODEL_INVALID: 422,
  RATE_LIMITED: 429,
  ENGINE_FAILURE: 500,
  ENGINE_CRASHED: 500,
  ENGINE_TIMEOUT: 504,
  INTERNAL: 500,
  SHUTTING_DOWN: 503,
  INSUFFICIENT_MEMORY: 507,
  QUEUE_FULL: 503,
  QUEUE_CLEARED: 503,
  JOB_STOPPED: 503,
  NOT_SUPPORTED: 400,
  // nginx's "client closed request": nobody reads it, but the request log shows why it ended.
  CLIENT_CLOSED: 499,
};

/** Statuses that Koa or the router raise themselves, as our codes. */
export function codeForHttpStatus(status: number): ErrorCode {
  if (status === 404) return "ROUTE_NOT_FOUND";
  if (status === 413) return "PAYLOAD_TOO_LARGE";
  if (status === 405 || status === 501) return "METHOD_NOT_ALLOWED";
  if (status >= 400 && status < 500) return "BAD_REQUEST";
  return "INTERNAL";
}
