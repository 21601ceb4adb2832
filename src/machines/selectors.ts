import type { SnapshotFrom } from "xstate";
import type { ModelInfo } from "../engine/types.ts";
import type { LastError, RuntimeMachine } from "./runtimeMachine.ts";

export type RuntimeSnapshot = SnapshotFrom<RuntimeMachine>;
export type RuntimeStateName = "empty" | "loading" | "idle" | "generating" | "cancelling" | "stopping" | "stopped";

/** The state a user sees: the innermost active state (`busy.generating` reads as `generating`). */
export function stateName(snapshot: RuntimeSnapshot): RuntimeStateName {
  let value: unknown = snapshot.value;
  while (value && typeof value === "object") value = Object.values(value)[0];
  return value as RuntimeStateName;
}

export interface StatusView {
  model_loaded: boolean;
  cpu_usage: number;
  memory_usage: number;
  state: RuntimeStateName;
  model: ModelInfo | null;
  last_error: LastError | null;
  load_progress: number | null;
  uptime_s: number;
  system: { cpu_load: number; memory_total: number; memory_available: number };
  sampled_at: string;
}

/** What GET /status answers: a pure function of a snapshot, so it costs no system call. */
export function statusView(snapshot: RuntimeSnapshot, startedAt: number): StatusView {
  const { context } = snapshot;
  return {
    model_loaded: context.model !== null,
    cpu_usage: context.resources.cpu_usage,
    memory_usage: context.resources.memory_usage,
    state: stateName(snapshot),
    model: context.model?.info ?? null,
    last_error: context.lastError,
    load_progress: context.load ? context.load.progress : null,
    uptime_s: Math.round((Date.now() - startedAt) / 100) / 10,
    system: context.resources.system,
    sampled_at: context.resources.sampled_at,
  };
}
