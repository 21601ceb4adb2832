import { randomUUID } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { openAiTarget, servedModelName } from "../../machines/selectors.ts";
import { defaultModelName } from "../../domain/models.ts";
import type { Routing } from "../validation.ts";
import type Router from "@koa/router";
import type { FinishReason, GenerateResult } from "../../domain/generation.ts";
import { generate, generateStreaming, type StreamFormat } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { parseChatCompletion, parseCompletion } from "../openai/requests.ts";
import type { RouteDeps } from "../runtime.ts";

/** OpenAI-compatible routes over the same machine, queue and cancellation as /run_prompt. */

const openAiFinish = (r: FinishReason): "stop" | "length" => (r === "length" || r === "timeout" ? "length" : "stop");
const usage = (r: GenerateResult) => ({ prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens });
const now = () => Math.floor(Date.now() / 1000);
const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;

/** Where an OpenAI request goes, and the name its response reports. */
function target(deps: RouteDeps, requested: string | null): { routing: Routing; model: string } {
  const snapshot = deps.supervisor.getSnapshot();
  const routing = openAiTarget(snapshot, requested);
  return { routing, model: servedModelName(snapshot, routing) };
}

/** `.gguf` files directly in the --models-dir folders, by model name. */
async function loadableModels(dirs: readonly string[]): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const dir of dirs) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const file of names.filter((n) => /\.gguf$/i.test(n)).sort()) {
      const name = defaultModelName(file);
      if (!found.has(name)) found.set(name, join(dir, file));
    }
  }
  return found;
}

export function openAiRoutes(router: Router, deps: RouteDeps): void {
  router.get("/v1/models", async (ctx) => {
    const { models } = deps.supervisor.getSnapshot().context;
    const loaded = Object.values(models).map((m) => ({ id: m.name, object: "model", created: Math.floor(m.loadedAt / 1000), owned_by: "kekahyde", loaded: true, path: m.path }));
    const loadable = [...(await loadableModels(deps.modelsDirs))]
      .filter(([name]) => !(name in models))
      .map(([name, path]) => ({ id: name, object: "model", created: now(), owned_by: "kekahyde", loaded: false, path }));
    ctx.body = { object: "list", data: [...loaded, ...loadable] };
  });

  router.post("/v1/completions", async (ctx) => {
    const { stream, model: requested, ...request } = parseCompletion(requireBody(ctx));
    const id = `cmpl-${randomUUID()}`;
    const created = now();
    const { routing, model } = target(deps, requested);
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
    const { routing, model } = target(deps, requested);
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
