/**
 * Keep-alive durations, written as Ollama writes them: a number of seconds, or a string of one or more
 * number-unit pairs ("30s", "5m", "1h", "1h30m", "250ms"). Zero means "unload right after the request";
 * any negative value means "forever" and comes back as -1, and so does any value longer than a timer can
 * wait (Ollama users write "720h"; see MAX_TIMER_MS).
 */
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PAIR = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;

export const FOREVER = -1;

/**
 * The longest delay Node's setTimeout holds (2^31-1 ms, about 24.8 days): a longer one fires at once, so a
 * keep-alive of "720h" would unload the model right away. Longer keep-alives are FOREVER instead, which
 * also keeps every date built from a keep-alive (now + it) in range.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A duration in milliseconds as the daemon keeps it: negative or past a timer's range is FOREVER. */
function keptMs(ms: number): number {
  if (ms < 0) return FOREVER;
  const rounded = Math.round(ms);
  return Number.isFinite(rounded) && rounded <= MAX_TIMER_MS ? rounded : FOREVER;
}

/** Milliseconds, or FOREVER; null when the value is not a duration (NaN, garbage, another type). */
export function parseDuration(value: unknown): number | null {
  // Infinity seconds is as long as it gets: forever, like 1e300; NaN is no length at all.
  if (typeof value === "number") return Number.isNaN(value) ? null : keptMs(value * 1000);
  if (typeof value !== "string") return null;
  const text = value.trim();
  if (/^-?\d+(\.\d+)?$/.test(text)) return parseDuration(Number(text));
  const negative = text.startsWith("-");
  const body = negative ? text.slice(1) : text;
  if (body === "" || body.replace(PAIR, "") !== "") return null;
  let ms = 0;
  for (const [, n, unit] of body.matchAll(PAIR)) ms += Number(n) * UNITS[unit];
  return negative && ms > 0 ? FOREVER : keptMs(ms);
}

export const DURATION_HELP = 'seconds, or a duration such as "30s", "5m", "1h" (0: unload after each request; -1, or over 24 days: never)';
