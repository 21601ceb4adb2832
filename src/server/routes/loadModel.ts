import type Router from "@koa/router";
import { canonicalModelName } from "../../catalogue/index.ts";
import { defaultModelName } from "../../domain/models.ts";
import type { LoadResult } from "../../machines/runtimeMachine.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { catalogueFile } from "../modelRouting.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseLoadModel } from "../validation.ts";

/** Loads a model by path, or by a name from the models directories (`{"name"}` without `"path"`). */
export function loadModelRoute(router: Router, deps: RouteDeps): void {
  router.post("/load_model", async (ctx) => {
    const request = parseLoadModel(requireBody(ctx));
    const path = request.path ?? (await catalogueFile(deps, request.name!));
    // A name from the models directories is taken as Ollama writes it ("x:latest" is "x").
    const name = request.name === undefined ? defaultModelName(path) : request.path === undefined ? canonicalModelName(request.name) : request.name;
    const { model } = await sendRequest(deps.supervisor, { type: "LOAD", ...request, path, name, ticket: createTicket<LoadResult>() });
    ctx.body = { success: true, message: "Model loaded", name, model };
  });
}
