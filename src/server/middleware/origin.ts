import type { Middleware } from "koa";
import { KekahydeError } from "../../errors.ts";

/**
 * Browser requests carry an Origin header. Only the daemon's own origin and those named with
 * --allowed-origins may call the API; any other (including "null", from files and sandboxed frames) gets
 * 403 before anything happens, which also stops cross-site "simple" POSTs that need no CORS preflight.
 * CORS headers are sent to allowed origins only.
 */
export function originCheck(allowedOrigins: readonly string[]): Middleware {
  const anyOrigin = allowedOrigins.includes("*");
  const allowed = new Set(allowedOrigins.map((o) => o.replace(/\/$/, "").toLowerCase()));
  return async (ctx, next) => {
    const origin = ctx.get("Origin");
    if (!origin) {
      // not a browser request (curl, SDKs)
      await next();
      return;
    }
    const own = `${ctx.protocol}://${ctx.host}`.toLowerCase();
    const normalized = origin.toLowerCase();
    if (normalized === own) {
      await next();
      return;
    }
    if (!(anyOrigin || allowed.has(normalized))) {
      throw new KekahydeError("FORBIDDEN_ORIGIN", `Origin ${origin} is not allowed. Start the daemon with --allowed-origins ${origin} to let that site call the API.`);
    }
    ctx.set("Access-Control-Allow-Origin", origin);
    ctx.vary("Origin");
    if (ctx.method === "OPTIONS") {
      ctx.set("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      ctx.set("Access-Control-Allow-Headers", "Content-Type, Authorization, Accept");
      ctx.set("Access-Control-Max-Age", "600");
      ctx.status = 204;
      return;
    }
    ctx.set("Access-Control-Expose-Headers", "X-Finish-Reason, X-Prompt-Tokens, X-Completion-Tokens, X-Cached-Tokens, Retry-After");
    await next();
  };
}
