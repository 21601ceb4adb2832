import type { Middleware } from "koa";
import type { Logger } from "../../log.ts";

/** One log line per request, written when the response has been sent (or the client went away). */
export function requestLog(log: Logger): Middleware {
  return async (ctx, next) => {
    const started = performance.now();
    ctx.res.once("close", () => {
      log.info(
        {
          event: "request",
          method: ctx.method,
          path: ctx.path,
          status: ctx.status,
          ms: Math.round((performance.now() - started) * 10) / 10,
          aborted: !ctx.res.writableFinished,
        },
        "request",
      );
    });
    await next();
  };
}
