import type Router from "@koa/router";
import type { Context } from "koa";
import type { EmbedRequest, EmbedResult } from "../../domain/jobs.ts";
import { parseOllamaEmbed, parseOllamaEmbeddings, parseOpenAiEmbeddings } from "../embeddings/requests.ts";
import { runJob } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { ollamaRouting, openAiRouting, type Routing } from "../routing.ts";
import type { RouteDeps } from "../runtime.ts";

/**
 * Embeddings: OpenAI's POST /v1/embeddings and Ollama's POST /api/embed and /api/embeddings. Each request is
 * one job of its model's runtime: it waits in the same queue as generations, takes a slot, can be stopped, and
 * shows in /status. Vectors are unit length (see docs/api.md).
 */

/** A vector as OpenAI's `encoding_format: "base64"` sends it: its float32 values, little-endian, in base64. */
function float32Base64(vector: readonly number[]): string {
  const bytes = Buffer.alloc(vector.length * 4);
  vector.forEach((v, i) => bytes.writeFloatLE(v, i * 4));
  return bytes.toString("base64");
}

const ns = (ms: number) => Math.round(ms * 1e6);

const embed = (ctx: Context, deps: RouteDeps, request: EmbedRequest, routing: Routing): Promise<EmbedResult> => runJob(ctx, deps, { kind: "embed", request }, routing);

export function embeddingRoutes(router: Router, deps: RouteDeps): void {
  router.post("/v1/embeddings", async (ctx) => {
    const request = parseOpenAiEmbeddings(requireBody(ctx));
    const { routing, model } = await openAiRouting(deps, request.model);
    const r = await embed(ctx, deps, request.embed, routing);
    ctx.body = {
      object: "list",
      data: r.vectors.map((v, index) => ({ object: "embedding", index, embedding: request.base64 ? float32Base64(v) : v })),
      model,
      usage: { prompt_tokens: r.promptTokens, total_tokens: r.promptTokens },
    };
  });

  router.post("/api/embed", async (ctx) => {
    const started = performance.now();
    const request = parseOllamaEmbed(requireBody(ctx));
    const r = await embed(ctx, deps, request.embed, await ollamaRouting(deps, request));
    ctx.body = { model: request.model, embeddings: r.vectors, total_duration: ns(performance.now() - started), load_duration: 0, prompt_eval_count: r.promptTokens };
  });

  router.post("/api/embeddings", async (ctx) => {
    const request = parseOllamaEmbeddings(requireBody(ctx));
    const r = await embed(ctx, deps, request.embed, await ollamaRouting(deps, request));
    ctx.body = { embedding: r.vectors[0] ?? [] };
  });
}
