import type { ModelInfo } from "../domain/models.ts";
import type { GenerationStats, LastError, RuntimeContext } from "../machines/runtimeMachine.ts";
import { stateName, type RuntimeStateName, type SupervisorSnapshot } from "../machines/selectors.ts";
import { defaultModel, type ModelEntry, type SupervisorContext } from "../machines/supervisorMachine.ts";

/** An engine process as the monitor last measured it (the supervisor keeps the samples). */
type ProcessSample = SupervisorContext["resources"]["processes"][number];

/**
 * The daemon's state as the HTTP API writes it (GET /status, /api/ps, the events feed, the agent check): the
 * machines export typed snapshots, and these snake_case views are shaped here, on the server's side.
 */

interface GenerationView {
  running: boolean;
  prompt_tokens: number | null;
  /** Of the prompt's tokens, those reused from the prompt cache; null until the generation ends. */
  cached_tokens: number | null;
  tokens: number;
  /** Generation speed after the first token (prompt processing excluded). */
  tokens_per_s: number | null;
  time_to_first_token_ms: number | null;
  elapsed_ms: number;
  finish_reason: string | null;
  /**
   * Speculative decoding (docs/speculative.md): tokens drafted and checked by the model, those that held, and
   * their share; present once a generation that speculated has ended.
   */
  draft_tokens?: number;
  accepted_draft_tokens?: number;
  draft_acceptance_rate?: number | null;
}

function generationView(g: GenerationStats | null, now = Date.now()): GenerationView | null {
  if (!g) return null;
  const end = g.endedAt ?? now;
  const decodeMs = end - g.startedAt - (g.firstTokenMs ?? 0);
  const tokensPerS = g.firstTokenMs !== null && g.completionTokens > 1 && decodeMs > 0 ? ((g.completionTokens - 1) * 1000) / decodeMs : null;
  return {
    running: g.endedAt === null,
    prompt_tokens: g.promptTokens,
    cached_tokens: g.cachedTokens ?? null,
    tokens: g.completionTokens,
    tokens_per_s: tokensPerS === null ? null : Math.round(tokensPerS * 10) / 10,
    time_to_first_token_ms: g.firstTokenMs === null ? null : Math.round(g.firstTokenMs * 10) / 10,
    elapsed_ms: end - g.startedAt,
    finish_reason: g.finishReason,
    ...(g.draftTokens != null && {
      draft_tokens: g.draftTokens,
      accepted_draft_tokens: g.acceptedDraftTokens ?? 0,
      draft_acceptance_rate: g.draftTokens > 0 ? Math.round(((g.acceptedDraftTokens ?? 0) / g.draftTokens) * 1000) / 1000 : null,
    }),
  };
}

/** The newest running job's figures, else the last finished job's. */
function currentGeneration(context: RuntimeContext): GenerationStats | null {
  return context.running.at(-1)?.stats ?? context.lastGeneration;
}

export interface ModelView {
  name: string;
  path: string;
  state: RuntimeStateName;
  queue_length: number;
  /** Generations running now (at most `parallel`). */
  running: number;
  parallel: number;
  context_size: number | null;
  size_bytes: number | null;
  /** Estimated memory: weights, KV cache and buffers (a draft model's included). */
  memory_bytes: number;
  /** Speculative decoding of greedy requests: "draft" (with a draft model) or "lookup"; null: none. */
  speculative: "draft" | "lookup" | null;
  /** The engine process that runs it, and its resident memory as the monitor last measured it. */
  engine_pid: number | null;
  engine_rss_bytes: number | null;
  last_used: string;
  /** When keep-alive unloads it; null while busy or when kept forever. */
  expires_at: string | null;
  keep_alive_s: number;
  load_progress: number | null;
  info: ModelInfo | null;
  generation: GenerationView | null;
  last_error: LastError | null;
}

/** Keep-alive as the API writes it: seconds, or -1 for "forever". */
const keepAliveSeconds = (ms: number): number => (ms < 0 ? -1 : ms / 1000);

export function modelView(entry: ModelEntry, processes: readonly ProcessSample[] = []): ModelView {
  const snapshot = entry.ref.getSnapshot();
  const { context } = snapshot;
  const info = context.model ?? null;
  const pid = info?.engine_pid ?? null;
  return {
    name: entry.name,
    path: entry.path,
    state: stateName(snapshot),
    queue_length: context.queue.length,
    running: context.running.length,
    parallel: context.slots,
    context_size: info?.context_size ?? null,
    size_bytes: info?.size_bytes ?? null,
    memory_bytes: entry.bytes,
    speculative: info?.speculative ?? null,
    engine_pid: pid,
    engine_rss_bytes: processes.find((p) => p.pid === pid)?.rss ?? null,
    last_used: new Date(entry.lastUsed).toISOString(),
    expires_at: entry.expiresAt === null ? null : new Date(entry.expiresAt).toISOString(),
    keep_alive_s: keepAliveSeconds(entry.keepAliveMs),
    load_progress: context.load ? context.load.progress : null,
    info,
    generation: generationView(currentGeneration(context)),
    last_error: context.lastError,
  };
}

export interface StatusView {
  model_loaded: boolean;
  cpu_usage: number;
  memory_usage: number;
  /** The default model's state ("empty" when none is loaded). */
  state: RuntimeStateName;
  model: ModelInfo | null;
  last_error: LastError | null;
  load_progress: number | null;
  queue_length: number;
  context_size: number | null;
  threads: number;
  gpu: string | false;
  generation: GenerationView | null;
  /** Every loaded model, the default one first. */
  models: Array<Omit<ModelView, "info" | "generation" | "last_error" | "load_progress">>;
  limits: { max_models: number; parallel: number; keep_alive_s: number; max_memory: string };
  uptime_s: number;
  system: { cpu_load: number; memory_total: number; memory_available: number };
  sampled_at: string;
}

const newest = (a: LastError | null, b: LastError | null): LastError | null => (a === null ? b : b === null ? a : a.at >= b.at ? a : b);

/** What GET /status answers: a pure function of snapshots, so it costs no system call. */
export function statusView(snapshot: SupervisorSnapshot, startedAt: number, defaultThreads: number): StatusView {
  const { context } = snapshot;
  const first = defaultModel(context);
  const views = Object.values(context.models)
    .sort((a, b) => (a === first ? -1 : b === first ? 1 : b.loadOrder - a.loadOrder))
    .map((m) => modelView(m, context.resources.processes));
  const main = first ? views[0] : null;
  const info = main?.info ?? null;
  const budget = context.maxMemory;
  return {
    model_loaded: Object.values(context.models).some((m) => m.ref.getSnapshot().context.model !== null),
    cpu_usage: context.resources.cpu_usage,
    memory_usage: context.resources.memory_usage,
    state: main?.state ?? "empty",
    model: info,
    last_error: newest(main?.last_error ?? null, context.lastError),
    load_progress: main?.load_progress ?? null,
    queue_length: main?.queue_length ?? 0,
    context_size: info?.context_size ?? null,
    threads: info?.threads ?? defaultThreads,
    gpu: info?.gpu ?? false,
    generation: main?.generation ?? null,
    models: views.map(({ info: _i, generation: _g, last_error: _e, load_progress: _p, ...rest }) => rest),
    limits: {
      max_models: context.maxModels,
      parallel: context.parallel,
      keep_alive_s: keepAliveSeconds(context.keepAliveMs),
      max_memory: "bytes" in budget ? String(budget.bytes) : `${Math.round(budget.fraction * 100)}%`,
    },
    uptime_s: Math.round((Date.now() - startedAt) / 100) / 10,
    system: context.resources.system,
    sampled_at: context.resources.sampled_at,
  };
}
