import { PassThrough } from "node:stream";
import type Router from "@koa/router";
import { activeIds } from "../../machines/feed.ts";
import { defaultRuntime } from "../../machines/selectors.ts";
import { statusView } from "../statusView.ts";
import { sseEvent } from "../generation.ts";
import type { RouteDeps } from "../runtime.ts";

const KEEPALIVE_MS = 15_000;

/**
 * GET /events: Server-Sent Events of the machines. First `snapshot`: the status and the active state ids (`active`
 * for the default model's runtime, `supervisor_active`, and `models_active` for every loaded model's runtime);
 * then the feed: a `transition` for every change of a runtime's state or queue, a `supervisor` event for every
 * change of the supervisor's state, `models`, `generation`, `load_progress`, and a `sample` per monitor reading.
 */
export function eventsRoute(router: Router, deps: RouteDeps): void {
  router.get("/events", (ctx) => {
    const out = new PassThrough();
    ctx.status = 200;
    ctx.type = "text/event-stream";
    ctx.set({ "Cache-Control": "no-cache", "X-Accel-Buffering": "no" });
    ctx.body = out;
    const snapshot = deps.supervisor.getSnapshot();
    const main = defaultRuntime(snapshot);
    const models_active = Object.fromEntries(Object.values(snapshot.context.models).map((m) => [m.name, activeIds(m.ref.getSnapshot())]));
    out.write(
      sseEvent(
        {
          ...statusView(snapshot, deps.startedAt, deps.defaultThreads),
          active: main ? activeIds(main) : ["runtime.empty"],
          supervisor_active: activeIds(snapshot, "supervisor"),
          models_active,
        },
        "snapshot",
      ),
    );
    const unsubscribe = deps.feed.subscribe((e) => out.write(sseEvent(e, e.type)));
    const keepalive = setInterval(() => out.write(": keep-alive\n\n"), KEEPALIVE_MS);
    const end = () => {
      unsubscribe();
      clearInterval(keepalive);
      out.end();
    };
    ctx.req.socket.once("close", end);
    if (deps.supervisor.getSnapshot().status !== "active") end();
  });
}
