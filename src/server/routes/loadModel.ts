import type Router from "@koa/router";
import type { LoadResult } from "../../domain/answers.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { loadTarget } from "../routing.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseLoadModel } from "../validation.ts";

/** Loads a model by path, or by a name from the models directories (`{"name"}` without `"path"`). */
export function loadModelRoute(router: Router, deps: RouteDeps): void {
  router.post("/load_model", async (ctx) => {
    const request = parseLoadModel(requireBody(ctx));
    const { path, name, settings } = await loadTarget(deps, request);
    const { model } = await sendRequest(deps.supervisor, { type: "LOAD", ...request, path, name, settings, ticket: createTicket<LoadResult>() });
    ctx.body = { success: true, message: "Model loaded", name, model };
  });
}
