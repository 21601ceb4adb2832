import type { Middleware } from "koa";
import { KekahydeError } from "../../errors.ts";

/** A token bucket: `capacity` tokens, refilled continuously at `perMinute` tokens a minute. */
class TokenBucket {
  private tokens: number;
  private at: number;
  constructor(
    private readonly capacity: number,
    private readonly perMinute: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.at = now;
  }
  /** Takes a token, or returns the seconds until one is available. */
  take(now: number): number {
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.at) / 60_000) * this.perMinute);
    this.at = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - this.tokens) * 60) / this.perMinute));
  }
  full(now: number): boolean {
    return this.tokens + ((now - this.at) / 60_000) * this.perMinute >= this.capacity;
  }
}

const MAX_CLIENTS = 10_000;

/**
 * `--rate-limit N`: N requests a minute per client address, loopback included. Reads (GET, OPTIONS) draw
 * from a separate bucket ten times larger, so a dashboard polling /status does not starve generation.
 * Past the budget: 429 with Retry-After.
 */
export function rateLimit(perMinute: number | null, now: () => number = Date.now): Middleware {
  if (perMinute === null) return (_ctx, next) => next();
  const buckets = new Map<string, TokenBucket>();
  return async (ctx, next) => {
    const read = ctx.method === "GET" || ctx.method === "HEAD" || ctx.method === "OPTIONS";
    const limit = read ? perMinute * 10 : perMinute;
    const key = `${read ? "read" : "write"}|${ctx.ip}`;
    const t = now();
    let bucket = buckets.get(key);
    if (!bucket) {
      if (buckets.size >= MAX_CLIENTS) for (const [k, b] of buckets) if (b.full(t)) buckets.delete(k);
      bucket = new TokenBucket(limit, limit, t);
      buckets.set(key, bucket);
    }
    const wait = bucket.take(t);
    if (wait > 0) {
      throw new KekahydeError("RATE_LIMITED", `Too many requests: the limit is ${limit} ${read ? "reads" : "requests"} a minute per client. Retry in ${wait} s.`, {
        retry_after_s: wait,
      });
    }
    await next();
  };
}
