import { createHash, timingSafeEqual } from "node:crypto";
import type { Middleware } from "koa";
import { KekahydeError } from "../../errors.ts";

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();

/**
 * With an API key set, every route but the open ones needs `Authorization: Bearer <key>`. Keys are compared
 * as SHA-256 digests with timingSafeEqual, so neither the length nor the content leaks through timing.
 */
export function apiKeyCheck(apiKey: string | null, openPaths: ReadonlySet<string>): Middleware {
  if (apiKey === null) return (_ctx, next) => next();
  const expected = digest(apiKey);
  return async (ctx, next) => {
    if (openPaths.has(ctx.path) || ctx.method === "OPTIONS") {
      await next();
      return;
    }
    const match = /^Bearer\s+(.+)$/i.exec(ctx.get("Authorization"));
    if (!match || !timingSafeEqual(digest(match[1].trim()), expected)) {
      ctx.set("WWW-Authenticate", 'Bearer realm="kekahyde"');
      throw new KekahydeError("UNAUTHORIZED", match ? "The API key is wrong." : "This daemon requires an API key: send 'Authorization: Bearer <key>'.");
    }
    await next();
  };
}
