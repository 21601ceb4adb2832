import { randomUUID } from "node:crypto";
import type Router from "@koa/router";
import type { FinishReason, GenerateResult, GenerationRequest, ToolCall } from "../../domain/generation.ts";
import { completionLogprobsView, tokenLogprobsView } from "../logprobs.ts";
import { generate, generateStreaming, type StreamFormat } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { parseChatCompletion, parseCompletion } from "../openai/requests.ts";
import { openAiRouting } from "../routing.ts";
import type { RouteDeps } from "../runtime.ts";
import { capabilitiesOf } from "../tools.ts";

/** OpenAI-compatible routes over the same machine, queue and cancellation as /run_prompt. */

const openAiFinish = (r: FinishReason): "stop" | "length" | "tool_calls" => (r === "length" || r === "timeout" ? "length" : r === "tool_calls" ? "tool_calls" : "stop");
const toolCallsOf = (calls: ToolCall[]) => calls.map(({ id, name, arguments: args }) => ({ id, type: "function" as const, function: { name, arguments: args } }));
const usage = (r: GenerateResult) => ({
  prompt_tokens: r.promptTokens,
  completion_tokens: r.completionTokens,
  total_tokens: r.promptTokens + r.completionTokens,
  // Prompt tokens found in the prompt cache, not evaluated again.
  prompt_tokens_details: { cached_tokens: r.cachedTokens ?? 0 },
});
/** Said in the answer when a conversation lost its oldest turns to fit the context ("truncate": true). */
const truncation = (r: GenerateResult) => (r.truncatedMessages ? { truncated_messages: r.truncatedMessages } : {});
/**
 * Log-probabilities, when asked for. They come with the whole reply: in a stream, all of them in the last
 * chunk (a client that gathers them chunk by chunk gets the full list).
 */
const chatLogprobs = (request: GenerationRequest, r: GenerateResult) => (request.logprobs ? { content: tokenLogprobsView(r.logprobs ?? []), refusal: null } : null);
const completionLogprobs = (request: GenerationRequest, r: GenerateResult) => (request.logprobs ? completionLogprobsView(r.logprobs ?? [], request.logprobs.top) : null);
const now = () => Math.floor(Date.now() / 1000);
const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;

export function openAiRoutes(router: Router, deps: RouteDeps): void {
  router.get("/v1/models", async (ctx) => {
    const { models } = deps.supervisor.getSnapshot().context;
    const entries = await deps.catalogue.list();
    const loaded = await Promise.all(
      Object.values(models).map(async (m) => {
        const entry = entries.find((e) => e.name === m.name) ?? entries.find((e) => e.path === m.path);
        const facts = entry ? entry.facts : await deps.catalogue.factsOf(m.path);
        return { id: m.name, object: "model", created: Math.floor(m.loadedAt / 1000), owned_by: "kekahyde", loaded: true, path: m.path, capabilities: capabilitiesOf(facts) };
      }),
    );
    const loadable = entries
      .filter((e) => e.facts !== null && !(e.name in models))
      .map((e) => ({ id: e.name, object: "model", created: Math.floor(e.modifiedAt.getTime() / 1000), owned_by: "kekahyde", loaded: false, path: e.path, capabilities: capabilitiesOf(e.facts) }));
    ctx.body = { object: "list", data: [...loaded, ...loadable] };
  });

  router.post("/v1/completions", async (ctx) => {
    const { stream, model: requested, ...request } = parseCompletion(requireBody(ctx));
    const id = `cmpl-${randomUUID()}`;
    const created = now();
    const { routing, model } = await openAiRouting(deps, requested);
    const base = { id, object: "text_completion", created, model };
    if (stream) {
      const format: StreamFormat = {
        contentType: "text/event-stream",
        chunk: (text) => sse({ ...base, choices: [{ index: 0, text, logprobs: null, finish_reason: null }] }),
        end: (r) => sse({ ...base, choices: [{ index: 0, text: "", logprobs: completionLogprobs(request, r), finish_reason: openAiFinish(r.finishReason) }], usage: usage(r), ...truncation(r) }) + "data: [DONE]\n\n",
        fail: (e) => sse({ error: { message: e.message, type: "server_error", code: e.code.toLowerCase() } }) + "data: [DONE]\n\n",
      };
      return generateStreaming(ctx, deps, request, routing, format);
    }
    const r = await generate(ctx, deps, request, routing);
    ctx.body = { ...base, choices: [{ index: 0, text: r.text, logprobs: completionLogprobs(request, r), finish_reason: openAiFinish(r.finishReason) }], usage: usage(r), ...truncation(r) };
  });

  router.post("/v1/chat/completions", async (ctx) => {
    const { stream, model: requested, ...request } = parseChatCompletion(requireBody(ctx));
    const id = `chatcmpl-${randomUUID()}`;
    const created = now();
    const { routing, model } = await openAiRouting(deps, requested);
    const base = { id, object: "chat.completion.chunk", created, model, system_fingerprint: null };
    if (stream) {
      let first = true;
      const delta = (d: Record<string, unknown>) => sse({ ...base, choices: [{ index: 0, delta: d, logprobs: null, finish_reason: null }] });
      // Tool calls as OpenAI streams them: per call, a delta with its index, id, type and name, then its arguments.
      // They come once the generation has ended (the engine reports calls whole), after any text.
      const toolCallDeltas = (calls: ToolCall[]) =>
        calls
          .map(
            (c, index) =>
              delta({ ...(first && index === 0 && { role: "assistant", content: null }), tool_calls: [{ index, id: c.id, type: "function", function: { name: c.name, arguments: "" } }] }) +
              delta({ tool_calls: [{ index, function: { arguments: c.arguments } }] }),
          )
          .join("");
      const format: StreamFormat = {
        contentType: "text/event-stream",
        chunk: (content) => {
          const d = first ? { role: "assistant", content } : { content };
          first = false;
          return delta(d);
        },
        end: (r) =>
          (r.toolCalls?.length ? toolCallDeltas(r.toolCalls) : first ? delta({ role: "assistant", content: "" }) : "") +
          sse({ ...base, choices: [{ index: 0, delta: {}, logprobs: chatLogprobs(request, r), finish_reason: openAiFinish(r.finishReason) }], usage: usage(r), ...truncation(r) }) +
          "data: [DONE]\n\n",
        fail: (e) => sse({ error: { message: e.message, type: "server_error", code: e.code.toLowerCase() } }) + "data: [DONE]\n\n",
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
      choices: [
        {
          index: 0,
          message: r.toolCalls?.length
            ? { role: "assistant", content: r.text === "" ? null : r.text, refusal: null, tool_calls: toolCallsOf(r.toolCalls) }
            : { role: "assistant", content: r.text, refusal: null },
          logprobs: chatLogprobs(request, r),
          finish_reason: openAiFinish(r.finishReason),
        },
      ],
      usage: usage(r),
      ...truncation(r),
    };
  });
}
