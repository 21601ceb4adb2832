import type { RuntimePhase } from "./runtimeMachine.ts";

/** What placement needs to know of a loaded model. */
export interface Placed {
  name: string;
  phase: RuntimePhase | "new";
  /** Estimated memory (weights + KV cache + buffers). */
  bytes: number;
  lastUsed: number;
}

export interface PlacementLimits {
  maxModels: number;
  /** Bytes all loaded models together may take. */
  budgetBytes: number;
}

export type Placement =
  | { ok: true; evict: string[] }
  | { ok: false; reason: "busy"; busy: string[] }
  | { ok: false; reason: "memory"; neededBytes: number; availableBytes: number };

/** A model doing nothing: the only kind that may be evicted. */
export const isEvictable = (m: Placed): boolean => m.phase === "idle" || m.phase === "empty";

/**
 * Decides where a model of `bytes` named `name` goes: which loaded models must be evicted, least recently
 * used first, so that at most `maxModels` stay loaded and their estimated memory fits the budget. A model of
 * the same name is being replaced and does not count. Busy models are never evicted; if evicting every idle
 * one is not enough, nothing is evicted and the reason is returned.
 */
export function place(loaded: readonly Placed[], incoming: { name: string; bytes: number }, limits: PlacementLimits): Placement {
  const others = loaded.filter((m) => m.name !== incoming.name);
  const candidates = others.filter(isEvictable).sort((a, b) => a.lastUsed - b.lastUsed);
  const evict: string[] = [];
  let count = others.length;
  let used = others.reduce((sum, m) => sum + m.bytes, 0);
  const tooMany = () => count + 1 > limits.maxModels;
  const tooBig = () => used + incoming.bytes > limits.budgetBytes;
  while ((tooMany() || tooBig()) && candidates.length > 0) {
    const victim = candidates.shift()!;
    evict.push(victim.name);
    count -= 1;
    used -= victim.bytes;
  }
  if (tooMany()) return { ok: false, reason: "busy", busy: others.filter((m) => !isEvictable(m)).map((m) => m.name) };
  if (tooBig()) return { ok: false, reason: "memory", neededBytes: incoming.bytes, availableBytes: Math.max(0, limits.budgetBytes - used) };
  return { ok: true, evict };
}
