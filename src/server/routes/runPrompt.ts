import type Router from "@koa/router";
import type { GenerateResult } from "../../domain/generation.ts";
import { generate, generateStreaming, sseEvent, type StreamFormat } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { kekahydeRouting } from "../routing.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseRunPrompt } from "../validation.ts";

const resultHeaders = (r: GenerateResult): Record<string, string> => ({
  "X-Finish-Reason": r.finishReason,
  "X-Prompt-Tokens": String(r.promptTokens),
  "X-Completion-Tokens": String(r.completionTokens),
  "X-Cached-Tokens": String(r.cachedTokens ?? 0),
});

/** `"stream": true`: plain text as it is decoded; the result headers come as HTTP trailers. */
const plainText: StreamFormat = {
  contentType: "text/plain; charset=utf-8",
  headers: { Trailer: "X-Finish-Reason, X-Prompt-Tokens, X-Completion-Tokens, X-Cached-Tokens" },
  chunk: (text) => text,
  end: () => "",
  fail: () => "",
  beforeEnd: (ctx, result) => ctx.res.addTrailers(resultHeaders(result)),
};

/** `Accept: text/event-stream`: a `data:` event per piece of text, then `event: done` with the counts. */
const serverSentEvents: StreamFormat = {
  contentType: "text/event-stream",
  chunk: (text) => sseEvent({ text }),
  end: (r) =>
    sseEvent({ finish_reason: r.finishReason, prompt_tokens: r.promptTokens, cached_tokens: r.cachedTokens ?? 0, completion_tokens: r.completionTokens }, "done"),
  fail: (e) => sseEvent({ code: e.code ?? "INTERNAL", message: e.message }, "error"),
};

export function runPromptRoute(router: Router, deps: RouteDeps): void {
  router.post("/run_prompt", async (ctx) => {
    const { stream, routing: asked, ...request } = parseRunPrompt(requireBody(ctx));
    const routing = await kekahydeRouting(deps, asked);
    if (/\btext\/event-stream\b/.test(ctx.get("Accept"))) return generateStreaming(ctx, deps, request, routing, serverSentEvents);
    if (stream) return generateStreaming(ctx, deps, request, routing, plainText);
    const result = await generate(ctx, deps, request, routing);
    ctx.status = 200;
    ctx.set(resultHeaders(result));
    ctx.type = "text/plain; charset=utf-8";
    ctx.body = result.text;
  });
}
