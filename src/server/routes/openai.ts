import { randomUUID } from "node:crypto";
import { openAiTarget, servedModelName } from "../../machines/selectors.ts";
import type { Routing } from "../validation.ts";
import type Router from "@koa/router";
import type { FinishReason, GenerateResult } from "../../domain/generation.ts";
import { generate, generateStreaming, type StreamFormat } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { routeByName } from "../modelRouting.ts";
import { parseChatCompletion, parseCompletion } from "../openai/requests.ts";
import type { RouteDeps } from "../runtime.ts";

/** OpenAI-compatible routes over the same machine, queue and cancellation as /run_prompt. */

const openAiFinish = (r: FinishReason): "stop" | "length" => (r === "length" || r === "timeout" ? "length" : "stop");
const usage = (r: GenerateResult) => ({ prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens });
const now = () => Math.floor(Date.now() / 1000);
const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;

/**
 * Where an OpenAI request goes, and the name its response reports: a loaded model of that name, or one in the
 * models directories (loaded on first use); any other name as before (see openAiTarget).
 */
async function target(deps: RouteDeps, requested: string | null): Promise<{ routing: Routing; model: string }> {
  if (requested !== null) {
    const to = await routeByName(deps, requested);
    if (to.load || (to.model !== undefined && to.model in deps.supervisor.getSnapshot().context.models)) return { routing: to, model: to.model! };
  }
  const snapshot = deps.supervisor.getSnapshot();
  const routing = openAiTarget(snapshot, requested);
  return { routing, model: servedModelName(snapshot, routing) };
}

export function openAiRoutes(router: Router, deps: RouteDeps): void {
  router.get("/v1/models", async (ctx) => {
    const { models } = deps.supervisor.getSnapshot().context;
    const loaded = Object.values(models).map((m) => ({ id: m.name, object: "model", created: Math.floor(m.loadedAt / 1000), owned_by: "kekahyde", loaded: true, path: m.path }));
    const loadable = (await deps.catalogue.list())
      .filter((e) => e.facts !== null && !(e.name in models))
      .map((e) => ({ id: e.name, object: "model", created: Math.floor(e.modifiedAt.getTime() / 1000), owned_by: "kekahyde", loaded: false, path: e.path }));
    ctx.body = { object: "list", data: [...loaded, ...loadable] };
  });

  router.post("/v1/completions", async (ctx) => {
    const { stream, model: requested, ...request } = parseCompletion(requireBody(ctx));
    const id = `cmpl-${randomUUID()}`;
    const created = now();
    const { routing, model } = await target(deps, requested);
    const base = { id, object: "text_completion", created, model };
    if (stream) {
      const format: StreamFormat = {
        contentType: "text/event-stream",
        chunk: (text) => sse({ ...base, choices: [{ index: 0, text, logprobs: null, finish_reason: null }] }),
        end: (r) => sse({ ...base, choices: [{ index: 0, text: "", logprobs: null, finish_reason: openAiFinish(r.finishReason) }], usage: usage(r) }) + "data: [DONE]\n\n",
        fail: (e) => sse({ error: { message: e.message, type: "server_error", code: e.code } }) + "data: [DONE]\n\n",
      };
      return generateStreaming(ctx, deps, request, routing, format);
    }
    const r = await generate(ctx, deps, request, routing);
    ctx.body = { ...base, choices: [{ index: 0, text: r.text, logprobs: null, finish_reason: openAiFinish(r.finishReason) }], usage: usage(r) };
  });

  router.post("/v1/chat/completions", async (ctx) => {
    const { stream, model: requested, ...request } = parseChatCompletion(requireBody(ctx));
    const id = `chatcmpl-${randomUUID()}`;
    const created = now();
    const { routing, model } = await target(deps, requested);
    const base = { id, object: "chat.completion.chunk", created, model, system_fingerprint: null };
    if (stream) {
      let first = true;
      const format: StreamFormat = {
        contentType: "text/event-stream",
        chunk: (content) => {
          const delta = first ? { role: "assistant", content } : { content };
          first = false;
          return sse({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: null }] });
        },
        end: (r) =>
          (first ? sse({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] }) : "") +
          sse({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: openAiFinish(r.finishReason) }], usage: usage(r) }) +
          "data: [DONE]\n\n",
        fail: (e) => sse({ error: { message: e.message, type: "server_error", code: e.code } }) + "data: [DONE]\n\n",
      };
      return generateStreaming(ctx, deps, request, routing, format);
    }
    const r = await generate(ctx, deps, request, routing);
    ctx.body = {
      id,
      object: "chat.completion",
      created,
      model,
      system_fingerprint: null,
      choices: [{ index: 0, message: { role: "assistant", content: r.text, refusal: null }, logprobs: null, finish_reason: openAiFinish(r.finishReason) }],
      usage: usage(r),
    };
  });
}
