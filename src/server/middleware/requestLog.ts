import type { Middleware } from "koa";
import type { Logger } from "../../log.ts";
import type { DaemonMetrics } from "../metrics.ts";

/**
 * Routes that dashboards and probes poll are logged at debug level: a monitor asking /status every second
 * should not fill the log, nor spend the event loop's time on it while a generation runs.
 */
const POLLED = new Set(["/status", "/health", "/metrics", "/machine.json"]);

/** One log line and two metrics (count, duration) per request, written when the response has been sent (or the client went away). */
export function requestLog(log: Logger, metrics: DaemonMetrics): Middleware {
  return async (ctx, next) => {
    const started = performance.now();
    ctx.res.once("close", () => {
      const ms = performance.now() - started;
      metrics.recordRequest((ctx as { _matchedRoute?: string })._matchedRoute ?? "unmatched", ctx.method, ctx.status, ms / 1000);
      const level = ctx.method === "GET" && POLLED.has(ctx.path) && ctx.status < 400 ? "debug" : "info";
      log[level](
        {
          event: "request",
          method: ctx.method,
          path: ctx.path,
          status: ctx.status,
          ms: Math.round(ms * 10) / 10,
          aborted: !ctx.res.writableFinished,
        },
        "request",
      );
    });
    await next();
  };
}
