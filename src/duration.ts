/**
 * Keep-alive durations, written as Ollama writes them: a number of seconds, or a string of one or more
 * number-unit pairs ("30s", "5m", "1h", "1h30m", "250ms"). Zero means "unload right after the request";
 * any negative value means "forever" and comes back as -1.
 */
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PAIR = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;

export const FOREVER = -1;

/** Milliseconds, or FOREVER; null when the value is not a duration. */
export function parseDuration(value: unknown): number | null {
  if (typeof value === "number") return Number.isFinite(value) ? (value < 0 ? FOREVER : Math.round(value * 1000)) : null;
  if (typeof value !== "string") return null;
  const text = value.trim();
  if (/^-?\d+(\.\d+)?$/.test(text)) return parseDuration(Number(text));
  const negative = text.startsWith("-");
  const body = negative ? text.slice(1) : text;
  if (body === "" || body.replace(PAIR, "") !== "") return null;
  let ms = 0;
  for (const [, n, unit] of body.matchAll(PAIR)) ms += Number(n) * UNITS[unit];
  return negative && ms > 0 ? FOREVER : Math.round(ms);
}

export const DURATION_HELP = 'seconds, or a duration such as "30s", "5m", "1h" (0: unload after each request; -1: never)';
