import type Router from "@koa/router";
import { parseRerank } from "../embeddings/requests.ts";
import { runJob } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { openAiRouting } from "../routing.ts";
import type { RouteDeps } from "../runtime.ts";

/**
 * Reranking in llama-server's shape (which is Jina's and Cohere's): POST /v1/rerank, and /rerank and
 * /v1/reranking as llama-server also answers. One job of the model's runtime, like a generation; a model that
 * is not a reranker is refused (400 NOT_SUPPORTED).
 */

const RERANK_PATHS = ["/v1/rerank", "/rerank", "/v1/reranking"] as const;

export function rerankRoutes(router: Router, deps: RouteDeps): void {
  for (const path of RERANK_PATHS) {
    router.post(path, async (ctx) => {
      const request = parseRerank(requireBody(ctx));
      const { routing, model } = await openAiRouting(deps, request.model);
      const r = await runJob(ctx, deps, { kind: "rank", request: request.rank }, routing);
      const results = r.scores
        .map((relevance_score, index) => ({ index, relevance_score, ...(request.returnDocuments && { document: { text: request.rank.documents[index] } }) }))
        // Best first; equal scores keep the documents' order.
        .sort((a, b) => b.relevance_score - a.relevance_score || a.index - b.index)
        .slice(0, request.topN ?? r.scores.length);
      ctx.body = { model, object: "list", usage: { prompt_tokens: r.promptTokens, total_tokens: r.promptTokens }, results };
    });
  }
}
