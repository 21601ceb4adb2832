import type Router from "@koa/router";
import { KekahydeError } from "../../errors.ts";
import type { GenerateResult } from "../../engine/types.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { readJsonObject } from "../body.ts";
import type { RouteDeps } from "../runtime.ts";

function optionalPositiveInteger(body: Record<string, unknown>, field: string): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new KekahydeError("BAD_REQUEST", `"${field}" must be a positive integer.`, { field });
  }
  return value;
}

export function runPromptRoute(router: Router, { runtime }: RouteDeps): void {
  router.post("/run_prompt", async (ctx) => {
    const body = await readJsonObject(ctx);
    if (typeof body.prompt !== "string" || body.prompt.length === 0) {
      throw new KekahydeError("BAD_REQUEST", 'Body needs "prompt": a non-empty string, e.g. {"prompt": "Explain recursion"}.', { field: "prompt" });
    }
    const maxTokens = optionalPositiveInteger(body, "max_tokens");
    const ticket = createTicket<GenerateResult>();
    const result = await sendRequest(runtime, { type: "RUN", prompt: body.prompt, maxTokens, ticket });
    ctx.status = 200;
    ctx.set("X-Finish-Reason", result.finishReason);
    ctx.set("X-Prompt-Tokens", String(result.promptTokens));
    ctx.set("X-Completion-Tokens", String(result.completionTokens));
    ctx.type = "text/plain; charset=utf-8";
    ctx.body = result.text;
  });
}
