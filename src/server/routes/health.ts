import type Router from "@koa/router";
import type { RouteDeps } from "../runtime.ts";

/** The one route open without an API key: liveness only, nothing about models or prompts. */
export function healthRoute(router: Router, { supervisor }: RouteDeps): void {
  router.get("/health", (ctx) => {
    ctx.body = { ok: supervisor.getSnapshot().status === "active" };
  });
}
