import type Router from "@koa/router";
import type { Context } from "koa";
import type { CatalogueEntry } from "../../catalogue/index.ts";
import { canonicalModelName } from "../../catalogue/index.ts";
import type { GenerateResult, ToolCall } from "../../domain/generation.ts";
import type { LoadResult, UnloadResult } from "../../domain/answers.ts";
import { modelView } from "../statusView.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { tokenLogprobsView } from "../logprobs.ts";
import { generate, generateStreaming, type StreamFormat } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { parseChat, parseGenerate, parseShow, type OllamaRequest } from "../ollama/requests.ts";
import { doneReason, OLLAMA_API_VERSION, runningOf, showOf, tagOf, tagOfLoaded, timingsOf, toolCallsOf } from "../ollama/views.ts";
import { ollamaNotFound, ollamaRouting, type Routing } from "../routing.ts";
import type { RouteDeps } from "../runtime.ts";

/**
 * Ollama's own API (its docs/api.md): the clients people already run (Copilot, Open WebUI, Continue, aider,
 * LangChain's ChatOllama, the `ollama` libraries) work unchanged. Same routes, fields, defaults (`stream`
 * true) and error shape (`{"error"}`, written by the error middleware for /api/). A model is named, never
 * defaulted; one that is not loaded but is in the models directories is loaded on first use.
 */

const ndjson = (value: unknown): string => `${JSON.stringify(value)}\n`;
const now = () => new Date().toISOString();

/**
 * A request without a prompt or messages: Ollama's idiom to load a model (and with `keep_alive: 0`, to
 * unload it). Answers with done_reason "load" or "unload".
 */
async function loadOrUnload(deps: RouteDeps, request: OllamaRequest, to: Routing): Promise<"load" | "unload"> {
  const model = to.model!;
  if (request.keepAliveMs === 0) {
    if (model in deps.supervisor.getSnapshot().context.models) await sendRequest(deps.supervisor, { type: "UNLOAD", model, ticket: createTicket<UnloadResult>() });
    return "unload";
  }
  if (to.load) {
    const settings = to.load.settings ?? {};
    await sendRequest(deps.supervisor, { type: "LOAD", path: to.load.path, name: model, settings, ...(to.keepAliveMs !== undefined && { keepAliveMs: to.keepAliveMs }), ticket: createTicket<LoadResult>() });
  }
  return "load";
}

/**
 * Streams or answers one generation in Ollama's shape; `frame` wraps a piece of text (and /api/chat's tool
 * calls) as /api/generate or /api/chat does. Streamed, the tool calls come in an object of their own before
 * the last one, as Ollama sends them.
 */
async function answer(ctx: Context, deps: RouteDeps, request: OllamaRequest, to: Routing, frame: (text: string, calls?: ToolCall[]) => Record<string, unknown>): Promise<void> {
  const started = performance.now();
  const base = () => ({ model: request.model, created_at: now() });
  // Log-probabilities come with the whole reply: streamed, all of them in the last object.
  const logprobs = (r: GenerateResult) => (request.generation!.logprobs ? { logprobs: tokenLogprobsView(r.logprobs ?? []) } : {});
  const final = (r: GenerateResult, text: string, calls?: ToolCall[]) => ({
    ...base(),
    ...frame(text, calls),
    done: true,
    done_reason: doneReason(r.finishReason),
    ...timingsOf(r, started),
    ...logprobs(r),
    // Said in the answer when the conversation lost its oldest turns to fit ("truncate": true).
    ...(r.truncatedMessages && { truncated_messages: r.truncatedMessages }),
  });
  if (request.stream) {
    const format: StreamFormat = {
      contentType: "application/x-ndjson",
      chunk: (text) => ndjson({ ...base(), ...frame(text), done: false }),
      end: (r) => (r.toolCalls?.length ? ndjson({ ...base(), ...frame("", r.toolCalls), done: false }) : "") + ndjson(final(r, "")),
      fail: (e) => ndjson({ error: e.message }),
    };
    return generateStreaming(ctx, deps, request.generation!, to, format);
  }
  const r = await generate(ctx, deps, request.generation!, to);
  ctx.body = final(r, r.text, r.toolCalls);
}

/** The catalogue's entries by name, and the loaded models' views. */
async function models(deps: RouteDeps): Promise<{ entries: Map<string, CatalogueEntry>; loaded: ReturnType<typeof modelView>[] }> {
  const snapshot = deps.supervisor.getSnapshot();
  const entries = new Map((await deps.catalogue.list()).map((e) => [e.name, e]));
  const loaded = Object.values(snapshot.context.models).map((m) => modelView(m, snapshot.context.resources.processes));
  return { entries, loaded };
}

const entryFor = (entries: Map<string, CatalogueEntry>, view: { name: string; path: string }) =>
  entries.get(view.name) ?? [...entries.values()].find((e) => e.path === view.path);

export function ollamaRoutes(router: Router, deps: RouteDeps): void {
  router.get("/api/version", (ctx) => {
    ctx.body = { version: OLLAMA_API_VERSION };
  });

  router.get("/api/tags", async (ctx) => {
    const { entries, loaded } = await models(deps);
    const listed = [...entries.values()].filter((e) => e.facts !== null).map(tagOf);
    // A model loaded by path from elsewhere can be used by its name too.
    const extra = loaded.filter((v) => !entryFor(entries, v) && v.info).map((v) => tagOfLoaded(v.name, v.info!));
    ctx.body = { models: [...listed, ...extra] };
  });

  router.get("/api/ps", async (ctx) => {
    const { entries, loaded } = await models(deps);
    ctx.body = { models: loaded.filter((v) => v.info !== null).map((v) => runningOf(v, entryFor(entries, v))) };
  });

  router.post("/api/show", async (ctx) => {
    const { model } = parseShow(requireBody(ctx));
    const { entries, loaded } = await models(deps);
    const name = canonicalModelName(model);
    const view = loaded.find((v) => v.name === model || v.name === name);
    const entry = view ? entryFor(entries, view) : entries.get(name);
    if (!view && !entry) throw ollamaNotFound(deps, model, await deps.catalogue.closeNames(name));
    ctx.body = showOf(view?.name ?? name, entry, view?.info ?? null, !entry && view ? await deps.catalogue.factsOf(view.path) : null);
  });

  router.post("/api/generate", async (ctx) => {
    const request = parseGenerate(requireBody(ctx));
    const to = await ollamaRouting(deps, request);
    if (!request.generation) {
      const reason = await loadOrUnload(deps, request, to);
      ctx.body = { model: request.model, created_at: now(), response: "", done: true, done_reason: reason };
      return;
    }
    await answer(ctx, deps, request, to, (text) => ({ response: text }));
  });

  router.post("/api/chat", async (ctx) => {
    const request = parseChat(requireBody(ctx));
    const to = await ollamaRouting(deps, request);
    if (!request.generation) {
      const reason = await loadOrUnload(deps, request, to);
      ctx.body = { model: request.model, created_at: now(), message: { role: "assistant", content: "" }, done: true, done_reason: reason };
      return;
    }
    await answer(ctx, deps, request, to, (text, calls) => ({ message: { role: "assistant", content: text, ...(calls?.length && { tool_calls: toolCallsOf(calls) }) } }));
  });

  // What Ollama does that Kekahyde does not, each with what to do instead.
  const dirs = () => deps.catalogue.dirs.join(", ");
  const refuse = (message: () => string) => (ctx: Context) => {
    ctx.status = 501;
    ctx.body = { error: message() };
  };
  router.post("/api/pull", refuse(() => `Kekahyde downloads nothing: put the model's .gguf file in a models directory (${dirs()}) and it is listed by its file name, at once.`));
  router.post("/api/push", refuse(() => "Kekahyde does not push models anywhere: the models are the .gguf files in its models directories."));
  router.post("/api/create", refuse(() => `Kekahyde has no Modelfiles: put a .gguf file in a models directory (${dirs()}); system prompts and options go in each request.`));
  router.post("/api/copy", refuse(() => `Copy or link the .gguf file in a models directory (${dirs()}) under the new name.`));
  router.delete("/api/delete", refuse(() => `Delete the .gguf file from its models directory (${dirs()}); Kekahyde never deletes model files.`));
  router.all("/api/blobs/:digest", refuse(() => `Kekahyde stores no blobs: put the .gguf file in a models directory (${dirs()}).`));
}
