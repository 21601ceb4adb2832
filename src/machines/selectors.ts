import type { SnapshotFrom } from "xstate";
import type { ModelInfo } from "../engine/types.ts";
import type { GenerationStats, LastError, RuntimeMachine } from "./runtimeMachine.ts";

export type RuntimeSnapshot = SnapshotFrom<RuntimeMachine>;
export type RuntimeStateName = "empty" | "loading" | "idle" | "generating" | "cancelling" | "stopping" | "stopped";

/** The state a user sees: the innermost active state (`busy.generating` reads as `generating`). */
export function stateName(snapshot: RuntimeSnapshot): RuntimeStateName {
  let value: unknown = snapshot.value;
  while (value && typeof value === "object") value = Object.values(value)[0];
  return value as RuntimeStateName;
}

export interface GenerationView {
  running: boolean;
  prompt_tokens: number | null;
  tokens: number;
  /** Generation speed after the first token (prompt processing excluded). */
  tokens_per_s: number | null;
  time_to_first_token_ms: number | null;
  elapsed_ms: number;
  finish_reason: string | null;
}

export function generationView(g: GenerationStats | null, now = Date.now()): GenerationView | null {
  if (!g) return null;
  const end = g.endedAt ?? now;
  const decodeMs = end - g.startedAt - (g.firstTokenMs ?? 0);
  const tokensPerS = g.firstTokenMs !== null && g.completionTokens > 1 && decodeMs > 0 ? ((g.completionTokens - 1) * 1000) / decodeMs : null;
  return {
    running: g.endedAt === null,
    prompt_tokens: g.promptTokens,
    tokens: g.completionTokens,
    tokens_per_s: tokensPerS === null ? null : Math.round(tokensPerS * 10) / 10,
    time_to_first_token_ms: g.firstTokenMs === null ? null : Math.round(g.firstTokenMs * 10) / 10,
    elapsed_ms: end - g.startedAt,
    finish_reason: g.finishReason,
  };
}

export interface StatusView {
  model_loaded: boolean;
  cpu_usage: number;
  memory_usage: number;
  state: RuntimeStateName;
  model: ModelInfo | null;
  last_error: LastError | null;
  load_progress: number | null;
  queue_length: number;
  context_size: number | null;
  threads: number;
  gpu: string | false;
  generation: GenerationView | null;
  uptime_s: number;
  system: { cpu_load: number; memory_total: number; memory_available: number };
  sampled_at: string;
}

/** What GET /status answers: a pure function of a snapshot, so it costs no system call. */
export function statusView(snapshot: RuntimeSnapshot, startedAt: number, defaultThreads: number): StatusView {
  const { context } = snapshot;
  const info = context.model?.info ?? null;
  return {
    model_loaded: context.model !== null,
    cpu_usage: context.resources.cpu_usage,
    memory_usage: context.resources.memory_usage,
    state: stateName(snapshot),
    model: info,
    last_error: context.lastError,
    load_progress: context.load ? context.load.progress : null,
    queue_length: context.queue.length,
    context_size: info?.context_size ?? null,
    threads: info?.threads ?? defaultThreads,
    gpu: info?.gpu ?? false,
    generation: generationView(context.generation),
    uptime_s: Math.round((Date.now() - startedAt) / 100) / 10,
    system: context.resources.system,
    sampled_at: context.resources.sampled_at,
  };
}
