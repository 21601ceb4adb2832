import Router from "@koa/router";
import Koa from "koa";
import type { Logger } from "../log.ts";
import { errorResponses } from "./middleware/errors.ts";
import { requestLog } from "./middleware/requestLog.ts";
import { loadModelRoute } from "./routes/loadModel.ts";
import { runPromptRoute } from "./routes/runPrompt.ts";
import { statusRoute } from "./routes/status.ts";
import { stopRoute } from "./routes/stop.ts";
import { unloadModelRoute } from "./routes/unloadModel.ts";
import type { RouteDeps } from "./runtime.ts";

export function createApp(deps: RouteDeps, log: Logger): Koa {
  const app = new Koa();
  app.silent = true; // errors are answered and logged by errorResponses
  const router = new Router();
  for (const route of [loadModelRoute, unloadModelRoute, runPromptRoute, stopRoute, statusRoute]) route(router, deps);
  app.use(requestLog(log));
  app.use(errorResponses(log));
  app.use(router.routes());
  app.use(router.allowedMethods({ throw: true }));
  return app;
}
