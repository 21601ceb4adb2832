import type Router from "@koa/router";
import { canonicalModelName } from "../../catalogue/index.ts";
import { defaultModelName } from "../../domain/models.ts";
import { KekahydeError } from "../../errors.ts";
import type { LoadResult } from "../../machines/runtimeMachine.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { catalogueFile } from "../modelRouting.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseLoadModel } from "../validation.ts";

/**
 * A draft model as `"draft_model"` names it: a path (with a separator, or ending in .gguf), else a name in the
 * models directories. The plan then checks the file as it checks the model's (folders, GGUF, vocabulary).
 */
async function draftModelFile(deps: RouteDeps, requested: string): Promise<string> {
  if (/[\\/]/.test(requested) || /\.gguf$/i.test(requested)) return requested;
  const entry = await deps.catalogue.find(canonicalModelName(requested));
  if (entry) return entry.path;
  const close = await deps.catalogue.closeNames(canonicalModelName(requested));
  throw new KekahydeError(
    "UNKNOWN_MODEL",
    `"draft_model": no model named "${requested}" in the models directories (${deps.catalogue.dirs.join(", ")})${close.length ? `; close names: ${close.join(", ")}` : ""}. Put the draft's .gguf file there, or give its path, e.g. {"draft_model": "/abs/small.gguf"}.`,
    { field: "draft_model", model: requested, suggestions: close, models_dirs: deps.catalogue.dirs },
  );
}

/** Loads a model by path, or by a name from the models directories (`{"name"}` without `"path"`). */
export function loadModelRoute(router: Router, deps: RouteDeps): void {
  router.post("/load_model", async (ctx) => {
    const request = parseLoadModel(requireBody(ctx));
    const path = request.path ?? (await catalogueFile(deps, request.name!));
    if (request.settings.draftModel !== undefined) request.settings.draftModel = await draftModelFile(deps, request.settings.draftModel);
    // A name from the models directories is taken as Ollama writes it ("x:latest" is "x").
    const name = request.name === undefined ? defaultModelName(path) : request.path === undefined ? canonicalModelName(request.name) : request.name;
    const { model } = await sendRequest(deps.supervisor, { type: "LOAD", ...request, path, name, ticket: createTicket<LoadResult>() });
    ctx.body = { success: true, message: "Model loaded", name, model };
  });
}
