import type Router from "@koa/router";
import type { RouteDeps } from "../runtime.ts";

/** GET /metrics: Prometheus text format. */
export function metricsRoute(router: Router, { metrics }: RouteDeps): void {
  router.get("/metrics", async (ctx) => {
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.registry.metrics();
  });
}
