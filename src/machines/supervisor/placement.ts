import type { RuntimePhase } from "../runtime/types.ts";

/** What placement needs to know of a loaded model. */
export interface Placed {
  name: string;
  phase: RuntimePhase | "new";
  /** Estimated memory (weights + KV cache + buffers). */
  bytes: number;
  /** Order of last use: lower was used longer ago. */
  lastUsed: number;
}

export interface PlacementLimits {
  maxModels: number;
  /** Bytes all loaded models together may take (`--max-memory`). */
  budgetBytes: number;
  /** Bytes the machine has for models: free memory plus what the loaded models hold. */
  machineBytes: number;
}

export type Placement =
  | { ok: true; evict: string[] }
  /** No room, and what holds it is loading. */
  | { ok: false; reason: "loading"; busy: string[] }
  /** No room, and what holds it is working. */
  | { ok: false; reason: "busy"; busy: string[] }
  /** Not enough of the --max-memory budget left, even with every idle model evicted. */
  | { ok: false; reason: "budget"; neededBytes: number; availableBytes: number }
  /** Not enough of the machine's memory left, even with every idle model evicted. */
  | { ok: false; reason: "machine"; neededBytes: number; availableBytes: number };

/** A model doing nothing: the only kind that may be evicted or replaced. */
const isEvictable = (m: Placed): boolean => m.phase === "idle";
const isLoading = (m: Placed): boolean => m.phase === "new" || m.phase === "loading";

function blocked(holders: readonly Placed[]): Placement {
  const busy = holders.map((m) => m.name);
  return { ok: false, reason: holders.length > 0 && holders.every(isLoading) ? "loading" : "busy", busy };
}

/**
 * Decides where a model of `bytes` named `name` goes: which loaded models must be evicted, least recently
 * used first, so that at most `maxModels` stay loaded and their estimated memory fits both the budget and
 * the machine. A model of the same name is replaced (it must be idle) and does not count. Working models
 * are never evicted; if evicting every idle one is not enough, nothing is evicted and the reason is returned.
 * The one memory policy of the daemon: the engine only supplies the numbers.
 */
export function place(loaded: readonly Placed[], incoming: { name: string; bytes: number }, limits: PlacementLimits): Placement {
  const same = loaded.find((m) => m.name === incoming.name);
  if (same && !isEvictable(same)) return blocked([same]);
  const others = loaded.filter((m) => m.name !== incoming.name);
  const candidates = others.filter(isEvictable).sort((a, b) => a.lastUsed - b.lastUsed);
  const evict: string[] = [];
  let count = others.length;
  let used = others.reduce((sum, m) => sum + m.bytes, 0);
  const limit = Math.min(limits.budgetBytes, limits.machineBytes);
  const tooMany = () => count + 1 > limits.maxModels;
  const tooBig = () => used + incoming.bytes > limit;
  while ((tooMany() || tooBig()) && candidates.length > 0) {
    const victim = candidates.shift()!;
    evict.push(victim.name);
    count -= 1;
    used -= victim.bytes;
  }
  if (tooMany()) return blocked(others.filter((m) => !isEvictable(m)));
  // The machine first: when it cannot hold the model, raising the budget would not help.
  if (used + incoming.bytes > limits.machineBytes) return { ok: false, reason: "machine", neededBytes: incoming.bytes, availableBytes: Math.max(0, limits.machineBytes - used) };
  if (used + incoming.bytes > limits.budgetBytes) return { ok: false, reason: "budget", neededBytes: incoming.bytes, availableBytes: Math.max(0, limits.budgetBytes - used) };
  return { ok: true, evict };
}
