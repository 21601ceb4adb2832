import { randomUUID } from "node:crypto";
import { PassThrough } from "node:stream";
import type { Context } from "koa";
import type { GenerateResult, GenerationRequest } from "../domain/generation.ts";
import type { JobResult, Work, WorkKind, WorkResults } from "../domain/jobs.ts";
import type { KekahydeError } from "../errors.ts";
import { sendRequest } from "../machines/sendRequest.ts";
import { createTicket, type Ticket } from "../machines/ticket.ts";
import type { Routing } from "./routing.ts";
import type { RouteDeps } from "./runtime.ts";
import { REQUEST_ID } from "./validation.ts";

/** How a streaming route writes: its content type, and how it frames text, the end and a late failure. */
export interface StreamFormat {
  contentType: string;
  headers?: Record<string, string>;
  chunk(text: string): string;
  end(result: GenerateResult): string;
  fail(error: KekahydeError): string;
  /** Called just before the stream ends, e.g. to add HTTP trailers. */
  beforeEnd?(ctx: Context, result: GenerateResult): void;
}

/**
 * A new request's identity: the job id the machines know it by (CANCEL names it, the engine reports by it)
 * and its ticket. A client that goes away cancels its own request: stopped if it runs, dropped if it waits.
 */
function newJob(ctx: Context, { supervisor }: RouteDeps): { id: string; requestId: string; ticket: Ticket<JobResult> } {
  const id = randomUUID();
  // What POST /stop {"id"} names: the client's own X-Request-Id (so it can stop a request before any answer
  // arrives), else the job's id, sent back either way; a proxy in front of several daemons routes by it.
  const given = ctx.get("X-Request-Id");
  const requestId = REQUEST_ID.test(given) ? given : id;
  ctx.set("X-Request-Id", requestId);
  const ticket = createTicket<JobResult>();
  ctx.res.once("close", () => {
    if (!ctx.res.writableFinished && !ticket.settled && supervisor.getSnapshot().status === "active") supervisor.send({ type: "CANCEL", job: id });
  });
  return { id, requestId, ticket };
}

/**
 * Runs one job on the model the routing names and returns its result: the result of that kind of work (the
 * runtime answers a job with the result its actor produced for it).
 */
export function runJob<K extends WorkKind>(ctx: Context, deps: RouteDeps, work: Extract<Work, { kind: K }>, routing: Routing): Promise<WorkResults[K]> {
  return sendRequest(deps.supervisor, { type: "RUN", ...routing, ...newJob(ctx, deps), work }) as Promise<WorkResults[K]>;
}

/** Runs one generation for a route and returns its result (non-streaming). */
export function generate(ctx: Context, deps: RouteDeps, request: GenerationRequest, routing: Routing): Promise<GenerateResult> {
  return runJob(ctx, deps, { kind: "generate", request }, routing);
}

/**
 * Runs one generation and streams it in `format`. The answer is held until the first text (or the end), so
 * that a refusal (no model, queue full, prompt too long) is still thrown as a proper error with its status,
 * never a broken 200 stream.
 */
export async function generateStreaming(ctx: Context, deps: RouteDeps, request: GenerationRequest, routing: Routing, format: StreamFormat): Promise<void> {
  const early: string[] = [];
  let write: ((text: string) => void) | null = null;
  let firstText!: () => void;
  const textStarted = new Promise<void>((resolve) => (firstText = resolve));
  const onText = (text: string) => {
    if (write) write(text);
    else {
      early.push(text);
      firstText();
    }
  };
  const done = sendRequest(deps.supervisor, { type: "RUN", ...routing, ...newJob(ctx, deps), work: { kind: "generate", request }, onText }) as Promise<GenerateResult>;
  await Promise.race([textStarted, done]);

  const out = new PassThrough();
  ctx.status = 200;
  ctx.type = format.contentType;
  ctx.set({ "Cache-Control": "no-cache", "X-Accel-Buffering": "no", ...format.headers });
  ctx.body = out;
  write = (text) => out.write(format.chunk(text));
  for (const text of early) write(text);
  done.then(
    (result) => {
      out.write(format.end(result));
      format.beforeEnd?.(ctx, result);
      out.end();
    },
    (error: KekahydeError) => {
      out.write(format.fail(error));
      out.end();
    },
  );
}

export const sseEvent = (data: unknown, event?: string): string => `${event ? `event: ${event}\n` : ""}data: ${JSON.stringify(data)}\n\n`;
