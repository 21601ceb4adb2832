import type { Context } from "koa";
import { KekahydeError } from "../errors.ts";

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** Reads the request body as a JSON object; an empty body reads as `{}` when `allowEmpty` is set. */
export async function readJsonObject(ctx: Context, { allowEmpty = false, limit = DEFAULT_MAX_BODY_BYTES } = {}): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new KekahydeError("BAD_REQUEST", `Request body is larger than ${limit} bytes.`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") {
    if (allowEmpty) return {};
    throw new KekahydeError("BAD_REQUEST", "Request body is empty; send a JSON object.");
  }
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
