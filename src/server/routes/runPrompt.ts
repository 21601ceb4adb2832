import { PassThrough } from "node:stream";
import type Router from "@koa/router";
import type { Context } from "koa";
import type { GenerateResult } from "../../engine/types.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket, type Ticket } from "../../machines/ticket.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseRunPrompt } from "../validation.ts";

const resultHeaders = (r: GenerateResult): Record<string, string> => ({
  "X-Finish-Reason": r.finishReason,
  "X-Prompt-Tokens": String(r.promptTokens),
  "X-Completion-Tokens": String(r.completionTokens),
});

const sseEvent = (data: unknown, event?: string) => `${event ? `event: ${event}\n` : ""}data: ${JSON.stringify(data)}\n\n`;

/** A client that goes away cancels its own request: stopped if it runs, dropped if it waits. */
function cancelOnDisconnect(ctx: Context, { runtime }: RouteDeps, job: Ticket<GenerateResult>): void {
  ctx.res.once("close", () => {
    if (!ctx.res.writableFinished && !job.settled && runtime.getSnapshot().status === "active") runtime.send({ type: "CANCEL", job });
  });
}

export function runPromptRoute(router: Router, deps: RouteDeps): void {
  router.post("/run_prompt", async (ctx) => {
    const { stream, ...request } = parseRunPrompt(requireBody(ctx));
    const sse = /\btext\/event-stream\b/.test(ctx.get("Accept"));
    const ticket = createTicket<GenerateResult>();
    cancelOnDisconnect(ctx, deps, ticket);

    if (!stream && !sse) {
      const result = await sendRequest(deps.runtime, { type: "RUN", request, ticket });
      ctx.status = 200;
      ctx.set(resultHeaders(result));
      ctx.type = "text/plain; charset=utf-8";
      ctx.body = result.text;
      return;
    }

    // Streaming: hold the answer until the first text (or the end), so that a refusal — no model, queue
    // full, prompt too long — is still a proper JSON error with its status, not a broken 200 stream.
    const early: string[] = [];
    let write: ((chunk: string) => void) | null = null;
    let firstText!: () => void;
    const textStarted = new Promise<void>((resolve) => (firstText = resolve));
    const onText = (chunk: string) => {
      if (write) write(chunk);
      else {
        early.push(chunk);
        firstText();
      }
    };
    const done = sendRequest(deps.runtime, { type: "RUN", request, onText, ticket });
    await Promise.race([textStarted, done]);

    const out = new PassThrough();
    ctx.status = 200;
    ctx.set("Cache-Control", "no-cache");
    ctx.set("X-Accel-Buffering", "no");
    if (sse) {
      ctx.type = "text/event-stream";
      write = (chunk) => out.write(sseEvent({ text: chunk }));
    } else {
      ctx.type = "text/plain; charset=utf-8";
      ctx.set("Trailer", "X-Finish-Reason, X-Prompt-Tokens, X-Completion-Tokens");
      write = (chunk) => out.write(chunk);
    }
    ctx.body = out;
    for (const chunk of early) write(chunk);
    done.then(
      (result) => {
        if (sse) {
          out.write(sseEvent({ finish_reason: result.finishReason, prompt_tokens: result.promptTokens, completion_tokens: result.completionTokens }, "done"));
        } else {
          ctx.res.addTrailers(resultHeaders(result));
        }
        out.end();
      },
      (error: Error & { code?: string }) => {
        if (sse) out.write(sseEvent({ code: error.code ?? "INTERNAL", message: error.message }, "error"));
        out.end();
      },
    );
  });
}
