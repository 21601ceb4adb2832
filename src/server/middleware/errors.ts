import type { Middleware } from "koa";
import { isKekahydeError, KekahydeError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { codeForHttpStatus, HTTP_STATUS } from "../errorMapping.ts";

/** OpenAI's error shape, so that OpenAI SDKs raise their usual exceptions. */
function openAiError(error: KekahydeError, status: number) {
  const type =
    status === 401 ? "authentication_error" : status === 403 ? "permission_error" : status === 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
  const param = typeof error.details.field === "string" ? error.details.field : null;
  return { error: { message: error.message, type, param, code: error.code.toLowerCase() } };
}

/**
 * Turns every error into `{"success": false, "message", "code", ...details}` (OpenAI's shape under /v1/,
 * Ollama's `{"error"}` under /api/) with the status its code maps to. Unexpected errors are logged in full and answered with a generic message: no stack trace leaves.
 */
export function errorResponses(log: Logger): Middleware {
  return async (ctx, next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) {
        throw new KekahydeError("ROUTE_NOT_FOUND", `No route ${ctx.method} ${ctx.path}. See the README for the API.`);
      }
    } catch (e) {
      let error: KekahydeError;
      if (isKekahydeError(e)) {
        error = e;
      } else if (typeof (e as { status?: unknown }).status === "number" && (e as { expose?: boolean }).expose) {
        const status = (e as { status: number }).status;
        const code = codeForHttpStatus(status);
        const message =
          code === "METHOD_NOT_ALLOWED" ? `${ctx.method} is not allowed on ${ctx.path}.${ctx.response.get("Allow") ? ` Allowed: ${ctx.response.get("Allow")}.` : ""}` : (e as Error).message;
        error = new KekahydeError(code, message);
      } else {
        log.error({ event: "unhandled_error", err: e, method: ctx.method, path: ctx.path }, "unhandled error");
        error = new KekahydeError("INTERNAL", "Internal error; see the daemon's log for details.");
      }
      ctx.status = HTTP_STATUS[error.code];
      if (typeof error.details.retry_after_s === "number") ctx.set("Retry-After", String(error.details.retry_after_s));
      ctx.body = ctx.path.startsWith("/v1/")
        ? openAiError(error, ctx.status)
        : ctx.path.startsWith("/api/")
          ? { error: error.message }
          : { success: false, message: error.message, code: error.code, ...error.details };
    }
  };
}
