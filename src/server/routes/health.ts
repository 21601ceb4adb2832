import type Router from "@koa/router";
import type { RouteDeps } from "../runtime.ts";

/**
 * The one route open without an API key: liveness only, nothing about models or prompts. While the daemon
 * drains before it stops (SIGTERM), it answers 503, so a load balancer sends it no new request.
 */
export function healthRoute(router: Router, { supervisor, draining }: RouteDeps): void {
  router.get("/health", (ctx) => {
    if (draining()) {
      ctx.status = 503;
      ctx.body = { ok: false, draining: true };
      return;
    }
    ctx.body = { ok: supervisor.getSnapshot().status === "active" };
  });
}
