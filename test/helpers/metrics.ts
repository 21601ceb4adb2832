/** The reasons /metrics counts engine process exits by (src/server/metrics.ts), each reported from the start. */
export const ENGINE_EXIT_REASONS = ["crash", "load_timeout", "first_token_timeout", "stuck", "stall", "cancelled"] as const;

/** kekahyde_engine_process_exits_total by reason, read from a daemon's /metrics (Prometheus text). */
export async function engineExits(get: (path: string) => Promise<Response>): Promise<Record<string, number>> {
  const res = await get("/metrics");
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  const counts: Record<string, number> = {};
  for (const m of (await res.text()).matchAll(/^kekahyde_engine_process_exits_total\{reason="([^"]*)"\} (\S+)$/gm)) counts[m[1]] = Number(m[2]);
  return counts;
}

/** What changed between two readings of engineExits: every reason, so that a count in the wrong one shows. */
export function exitsSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const reasons = new Set([...ENGINE_EXIT_REASONS, ...Object.keys(before), ...Object.keys(after)]);
  return Object.fromEntries([...reasons].map((r) => [r, (after[r] ?? 0) - (before[r] ?? 0)]));
}

/** The change expected when exactly one engine process ended, for `reason` ("none": when none did). */
export function oneExit(reason: (typeof ENGINE_EXIT_REASONS)[number] | "none"): Record<string, number> {
  return Object.fromEntries(ENGINE_EXIT_REASONS.map((r) => [r, r === reason ? 1 : 0]));
}
