import type { Context, Middleware } from "koa";
import { KekahydeError } from "../../errors.ts";

declare module "koa" {
  interface DefaultState {
    /** The parsed JSON body of a POST, or undefined when it had none. */
    body?: Record<string, unknown>;
  }
}

/**
 * Reads POST bodies in one place: a body must be `application/json` (else 415: this blocks cross-site
 * form and text/plain posts), at most `limit` bytes (else 413, checked on Content-Length before reading),
 * and a JSON object (else 400). A POST with no body passes with `ctx.state.body` undefined.
 */
export function jsonBody(limit: number): Middleware {
  return async (ctx, next) => {
    if (ctx.method !== "POST") return next();
    const length = ctx.get("Content-Length");
    const chunked = /chunked/i.test(ctx.get("Transfer-Encoding"));
    if (!chunked && (length === "" || length === "0")) return next();
    if (!ctx.is("application/json")) {
      throw new KekahydeError("UNSUPPORTED_MEDIA_TYPE", `Send the body as JSON with 'Content-Type: application/json' (got '${ctx.get("Content-Type") || "none"}').`);
    }
    if (length !== "" && Number(length) > limit) {
      ctx.set("Connection", "close");
      throw tooLarge(limit);
    }
    ctx.state.body = parse(await read(ctx, limit));
    await next();
  };
}

const tooLarge = (limit: number) => new KekahydeError("PAYLOAD_TOO_LARGE", `The request body is larger than ${limit} bytes (--max-body).`);

async function read(ctx: Context, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      // Stop reading; the connection is closed after the 413 rather than drained of an unbounded body.
      ctx.set("Connection", "close");
      throw tooLarge(limit);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function parse(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new KekahydeError("INVALID_JSON", `Request body is not valid JSON (${(e as Error).message}).`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new KekahydeError("BAD_REQUEST", "Request body must be a JSON object.");
  }
  return value as Record<string, unknown>;
}

/** The body a route requires. */
export function requireBody(ctx: Context): Record<string, unknown> {
  if (!ctx.state.body) throw new KekahydeError("BAD_REQUEST", "Request body is empty; send a JSON object.");
  return ctx.state.body;
}

/** The body a route may go without. */
export function optionalBody(ctx: Context): Record<string, unknown> {
  return ctx.state.body ?? {};
}
