import type Router from "@koa/router";
import { statusView } from "../statusView.ts";
import type { RouteDeps } from "../runtime.ts";

export function statusRoute(router: Router, { supervisor, startedAt, defaultThreads, catalogue }: RouteDeps): void {
  router.get("/status", (ctx) => {
    ctx.body = { ...statusView(supervisor.getSnapshot(), startedAt, defaultThreads), models_dirs: catalogue.dirs };
  });
}
