import Router from "@koa/router";
import Koa from "koa";
import type { Logger } from "../log.ts";
import { apiKeyCheck } from "./middleware/apiKey.ts";
import { errorResponses } from "./middleware/errors.ts";
import { hostCheck } from "./middleware/hostCheck.ts";
import { jsonBody } from "./middleware/jsonBody.ts";
import { originCheck } from "./middleware/origin.ts";
import { rateLimit } from "./middleware/rateLimit.ts";
import { requestLog } from "./middleware/requestLog.ts";
import { embeddingRoutes } from "./routes/embeddings.ts";
import { eventsRoute } from "./routes/events.ts";
import { healthRoute } from "./routes/health.ts";
import { inspectorRoutes } from "./routes/inspector.ts";
import { loadModelRoute } from "./routes/loadModel.ts";
import { metricsRoute } from "./routes/metrics.ts";
import { ollamaRoutes } from "./routes/ollama.ts";
import { openAiRoutes } from "./routes/openai.ts";
import { rerankRoutes } from "./routes/rerank.ts";
import { runPromptRoute } from "./routes/runPrompt.ts";
import { statusRoute } from "./routes/status.ts";
import { stopRoute } from "./routes/stop.ts";
import { tokenRoutes } from "./routes/tokens.ts";
import { unloadModelRoute } from "./routes/unloadModel.ts";
import type { RouteDeps } from "./runtime.ts";

export interface SecurityOptions {
  listenHost: string;
  allowedHosts: readonly string[];
  allowedOrigins: readonly string[];
  apiKey: string | null;
  maxBodyBytes: number;
  rateLimit: number | null;
}

/**
 * The middleware chain, outermost first: log, answer errors, then refuse what is not ours before any work
 * is done (foreign Host, foreign Origin, over the rate, no API key, not JSON or too large), then route.
 */
export function createApp(deps: RouteDeps, security: SecurityOptions, log: Logger): Koa {
  const app = new Koa();
  app.silent = true; // errors are answered and logged by errorResponses
  const router = new Router();
  for (const route of [
    healthRoute,
    loadModelRoute,
    unloadModelRoute,
    runPromptRoute,
    stopRoute,
    statusRoute,
    openAiRoutes,
    ollamaRoutes,
    embeddingRoutes,
    rerankRoutes,
    tokenRoutes,
    eventsRoute,
    inspectorRoutes,
    metricsRoute,
  ]) route(router, deps);
  app.use(requestLog(log, deps.metrics));
  app.use(errorResponses(log));
  app.use(hostCheck(security.listenHost, security.allowedHosts));
  app.use(originCheck(security.allowedOrigins));
  app.use(rateLimit(security.rateLimit));
  app.use(apiKeyCheck(security.apiKey, new Set(["/health"])));
  app.use(jsonBody(security.maxBodyBytes));
  app.use(router.routes());
  app.use(router.allowedMethods({ throw: true }));
  return app;
}
