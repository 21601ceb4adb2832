import type Router from "@koa/router";
import { parseDetokenize, parseTokenize } from "../embeddings/requests.ts";
import { runJob } from "../generation.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import { kekahydeRouting } from "../routing.ts";
import type { RouteDeps } from "../runtime.ts";

/**
 * llama-server's POST /tokenize and POST /detokenize, with an optional `model` (default: the default model;
 * a model in the models directories is loaded on first use). Each is a job of the model's runtime.
 */
export function tokenRoutes(router: Router, deps: RouteDeps): void {
  router.post("/tokenize", async (ctx) => {
    const { routing, tokenize } = parseTokenize(requireBody(ctx));
    const r = await runJob(ctx, deps, { kind: "tokenize", request: tokenize }, await kekahydeRouting(deps, routing));
    ctx.body = { tokens: r.pieces ? r.tokens.map((id, i) => ({ id, piece: r.pieces![i] })) : r.tokens };
  });

  router.post("/detokenize", async (ctx) => {
    const { routing, detokenize } = parseDetokenize(requireBody(ctx));
    const r = await runJob(ctx, deps, { kind: "detokenize", request: detokenize }, await kekahydeRouting(deps, routing));
    ctx.body = { content: r.text };
  });
}
