import type { IncomingMessage } from "node:http";
import type { Context, Middleware } from "koa";
import { KekahydeError } from "../../errors.ts";

declare module "koa" {
  interface DefaultState {
    /** The parsed JSON body of a POST, or undefined when it had none. */
    body?: Record<string, unknown>;
  }
}

/** The longest the daemon goes on reading a refused body before it closes the connection. */
export const DISCARD_MAX_MS = 5_000;

/** The most bytes of a refused body the daemon reads before it closes the connection: 8 × the limit, at least 16 MiB. */
function discardMaxBytes(limit: number): number {
  return Math.max(8 * limit, 16 * 1024 * 1024);
}

/**
 * The most levels a request's JSON may nest (objects and arrays; the body itself is level 1). The daemon's
 * own walkers over request values recurse (the schema checks, JSON.stringify of tool arguments), so a body
 * nested thousands of levels would overflow their stack and be answered 500: it is refused before any of them
 * runs. Real requests nest far less: a tool schema at its own limit of 32 levels is about 70 levels deep.
 */
export const MAX_JSON_DEPTH = 100;

/** A path into a JSON value: property names and array indexes. */
export type JsonPath = Array<string | number>;

interface Container {
  value: object;
  depth: number;
  key: string | number | null;
  parent: Container | null;
}

/**
 * The path of the first object or array in `value` that nests deeper than `limit` levels, or null when none
 * does. Iterative, with a stack of its own, so that it is safe at any depth: this runs before anything that
 * recurses.
 */
export function pathBeyondDepth(value: unknown, limit: number): JsonPath | null {
  if (typeof value !== "object" || value === null) return null;
  const stack: Container[] = [{ value, depth: 1, key: null, parent: null }];
  while (stack.length > 0) {
    const container = stack.pop()!;
    if (container.depth > limit) return pathOf(container);
    const entries: Array<[string | number, unknown]> = Array.isArray(container.value) ? container.value.map((v, i) => [i, v]) : Object.entries(container.value);
    for (const [key, child] of entries) {
      if (typeof child === "object" && child !== null) stack.push({ value: child, depth: container.depth + 1, key, parent: container });
    }
  }
  return null;
}

function pathOf(container: Container): JsonPath {
  const path: JsonPath = [];
  for (let c: Container | null = container; c?.key != null; c = c.parent) path.push(c.key);
  return path.reverse();
}

/**
 * Whether JSON text (a tool call's `arguments`, which the engine parses and renders) nests deeper than `limit`
 * levels, by its brackets outside strings; text that is not JSON is judged the same way, harmlessly.
 */
export function textNestsDeeperThan(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "[" || c === "{") {
      if (++depth > limit) return true;
    } else if (c === "]" || c === "}") depth--;
  }
  return false;
}

/** The first `segments` of a path as a client writes it (`tools[0].function.parameters`), with "…" when cut. */
function shownPath(path: JsonPath, segments = 6): string {
  const shown = path.slice(0, segments).reduce<string>((text, key) => (typeof key === "number" ? `${text}[${key}]` : text === "" ? key : `${text}.${key}`), "");
  return path.length > segments ? `${shown}…` : shown;
}

/**
 * Reads POST bodies in one place: a body must be `application/json` (else 415: this blocks cross-site
 * form and text/plain posts), at most `limit` bytes (else 413), and a JSON object nested at most
 * MAX_JSON_DEPTH levels (else 400). A POST with no body passes with `ctx.state.body` undefined.
 *
 * A body over the limit (by its Content-Length, or once a chunked body passes it) is still read, and
 * discarded, before the 413 goes out with `Connection: close`, as nginx's lingering close does: closing a
 * socket with unread data resets the connection, and a client still sending would get that reset instead
 * of the answer. Reading is bounded: at most discardMaxBytes(limit) bytes of body (a Content-Length
 * beyond that is not read at all) and DISCARD_MAX_MS after the limit was passed; past either, the 413 is
 * sent and the connection closed at once.
 */
export function jsonBody(limit: number): Middleware {
  const discardBytes = discardMaxBytes(limit);
  return async (ctx, next) => {
    if (ctx.method !== "POST") {
      await next();
      return;
    }
    const length = ctx.get("Content-Length");
    const chunked = /chunked/i.test(ctx.get("Transfer-Encoding"));
    if (!chunked && (length === "" || length === "0")) {
      await next();
      return;
    }
    if (!ctx.is("application/json")) {
      throw new KekahydeError("UNSUPPORTED_MEDIA_TYPE", `Send the body as JSON with 'Content-Type: application/json' (got '${ctx.get("Content-Type") || "none"}').`);
    }
    const declared = length === "" ? null : Number(length);
    if (declared !== null && declared > limit) {
      if (declared <= discardBytes) await receive(ctx.req, -1, discardBytes);
      throw tooLarge(ctx, limit);
    }
    const body = await receive(ctx.req, limit, discardBytes);
    if (body === null) throw tooLarge(ctx, limit);
    ctx.state.body = parse(body.toString("utf8"));
    await next();
  };
}

function tooLarge(ctx: Context, limit: number): KekahydeError {
  ctx.set("Connection", "close");
  return new KekahydeError("PAYLOAD_TOO_LARGE", `The request body is larger than ${limit} bytes (--max-body).`);
}

/**
 * The body, or null once it passed `limit` bytes (-1: it is already known to be too large). Past the limit
 * nothing is kept, but reading goes on until the body ends, `discardBytes` have been read in all, or
 * DISCARD_MAX_MS have passed; then reading stops (the request is paused, so the rest stays unread and the
 * connection is closed after the answer). A client that goes away before the end rejects it, as before.
 */
function receive(req: IncomingMessage, limit: number, discardBytes: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    let timer: NodeJS.Timeout | undefined;
    const settle = (outcome: Buffer | null | Error) => {
      clearTimeout(timer);
      req.off("data", onData).off("end", onEnd).off("error", onError).off("close", onClose);
      if (!req.complete) req.pause();
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    const passLimit = () => {
      over = true;
      chunks.length = 0;
      timer = setTimeout(() => settle(null), DISCARD_MAX_MS);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (!over) {
        if (size <= limit) return void chunks.push(chunk);
        passLimit();
      }
      if (size > discardBytes) settle(null);
    };
    const onEnd = () => settle(over ? null : Buffer.concat(chunks));
    const onError = (e: Error) => settle(over ? null : e);
    const onClose = () => settle(over ? null : new Error("the client closed the connection before the body ended"));
    if (limit < 0) passLimit();
    req.on("data", onData).on("end", onEnd).on("error", onError).on("close", onClose);
  });
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
  refuseDeepNesting(value);
  return value as Record<string, unknown>;
}

function refuseDeepNesting(body: object): void {
  const path = pathBeyondDepth(body, MAX_JSON_DEPTH);
  if (path === null) return;
  const field = String(path[0]);
  throw new KekahydeError("BAD_REQUEST", `"${field}" is nested deeper than ${MAX_JSON_DEPTH} levels (at ${shownPath(path)}): a request's JSON may nest at most ${MAX_JSON_DEPTH} levels.`, { field });
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
