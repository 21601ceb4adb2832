import { randomUUID } from "node:crypto";
import type Router from "@koa/router";
import type { FinishReason, GenerateResult } from "../../engine/types.ts";
import { generate, generateStreaming, type StreamFormat } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { parseChatCompletion, parseCompletion } from "../openai/requests.ts";
import type { RouteDeps } from "../runtime.ts";

/** OpenAI-compatible routes over the same machine, queue and cancellation as /run_prompt. */

const openAiFinish = (r: FinishReason): "stop" | "length" => (r === "length" || r === "timeout" ? "length" : "stop");
const usage = (r: GenerateResult) => ({ prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens });
const now = () => Math.floor(Date.now() / 1000);
const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;

function servedModel(deps: RouteDeps): string {
  return deps.runtime.getSnapshot().context.model?.info.name ?? "none";
}

export function openAiRoutes(router: Router, deps: RouteDeps): void {
  router.get("/v1/models", (ctx) => {
    const model = deps.runtime.getSnapshot().context.model;
    ctx.body = {
      object: "list",
      data: model ? [{ id: model.info.name, object: "model", created: now(), owned_by: "kekahyde" }] : [],
    };
  });

  router.post("/v1/completions", async (ctx) => {
    const { stream, model: _model, ...request } = parseCompletion(requireBody(ctx));
    const id = `cmpl-${randomUUID()}`;
    const created = now();
    const model = servedModel(deps);
    const base = { id, object: "text_completion", created, model };
    if (stream) {
      const format: StreamFormat = {
        contentType: "text/event-stream",
        chunk: (text) => sse({ ...base, choices: [{ index: 0, text, logprobs: null, finish_reason: null }] }),
        end: (r) => sse({ ...base, choices: [{ index: 0, text: "", logprobs: null, finish_reason: openAiFinish(r.finishReason) }], usage: usage(r) }) + "data: [DONE]\n\n",
        fail: (e) => sse({ error: { message: e.message, type: "server_error", code: e.code } }) + "data: [DONE]\n\n",
      };
      return generateStreaming(ctx, deps, request, format);
    }
    const r = await generate(ctx, deps, request);
    ctx.body = { ...base, choices: [{ index: 0, text: r.text, logprobs: null, finish_reason: openAiFinish(r.finishReason) }], usage: usage(r) };
  });

  router.post("/v1/chat/completions", async (ctx) => {
    const { stream, model: _model, ...request } = parseChatCompletion(requireBody(ctx));
    const id = `chatcmpl-${randomUUID()}`;
    const created = now();
    const model = servedModel(deps);
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
      return generateStreaming(ctx, deps, request, format);
    }
    const r = await generate(ctx, deps, request);
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
