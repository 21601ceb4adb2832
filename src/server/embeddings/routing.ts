import { canonicalModelName } from "../../catalogue/index.ts";
import { KekahydeError } from "../../errors.ts";
import { openAiTarget, servedModelName } from "../../machines/selectors.ts";
import { routeByName } from "../modelRouting.ts";
import type { RouteDeps } from "../runtime.ts";
import type { Routing } from "../validation.ts";

/**
 * Where an OpenAI-style request (/v1/embeddings, /v1/rerank) goes, and the name its response reports, as for
 * /v1/chat/completions: a loaded model of that name, or one in the models directories (loaded on first use);
 * any other name goes to the default model while at most one model is loaded (OpenAI clients must send some
 * name, llama-server ignores it), and is refused once several are.
 */
export async function openAiRouting(deps: RouteDeps, requested: string | null): Promise<{ routing: Routing; model: string }> {
  if (requested !== null) {
    const to = await routeByName(deps, requested);
    if (to.load || (to.model !== undefined && to.model in deps.supervisor.getSnapshot().context.models)) return { routing: to, model: to.model! };
  }
  const snapshot = deps.supervisor.getSnapshot();
  const routing = openAiTarget(snapshot, requested);
  return { routing, model: servedModelName(snapshot, routing) };
}

/** Where a Kekahyde-style request with an optional `model` goes: that model (loaded on first use), else the default one. */
export async function optionalModelRouting(deps: RouteDeps, asked: Routing): Promise<Routing> {
  return asked.model === undefined ? asked : { ...asked, ...(await routeByName(deps, asked.model)) };
}

/**
 * Where an Ollama request goes: a model is named, never defaulted; one in the models directories is loaded on
 * first use (with `options.num_ctx`); a name that is nowhere gets Ollama's 404.
 */
export async function ollamaRouting(deps: RouteDeps, request: { model: string; keepAliveMs?: number; contextSize?: number }): Promise<Routing> {
  const to = await routeByName(deps, request.model);
  if (!to.load && to.suggestions) {
    throw new KekahydeError(
      "UNKNOWN_MODEL",
      `model "${request.model}" not found: put ${canonicalModelName(request.model).replace(/:/, "/")}.gguf in a models directory (${deps.catalogue.dirs.join(", ")})${to.suggestions.length ? `; close names: ${to.suggestions.join(", ")}` : ""}`,
    );
  }
  return {
    ...to,
    ...(to.load && request.contextSize !== undefined && { load: { ...to.load, settings: { contextSize: request.contextSize } } }),
    ...(request.keepAliveMs !== undefined && { keepAliveMs: request.keepAliveMs }),
  };
}
