import { defaultModelName } from "../../domain/models.ts";
import type { HeldLoad, ModelEntry, ParkedRun, SupervisorContext, SupervisorEvent } from "./types.ts";

/** Pure reads of the supervisor's context that its guards and actions share. */

export const entries = (context: SupervisorContext): ModelEntry[] => Object.values(context.models);

/** The model requests without a `model` go to: the one loaded most recently. */
export function defaultModel(context: SupervisorContext): ModelEntry | null {
  return entries(context).reduce<ModelEntry | null>((best, m) => (best === null || m.loadOrder > best.loadOrder ? m : best), null);
}

/** The loaded model whose runtime is `ref`. */
export const entryOf = (context: SupervisorContext, ref: unknown): ModelEntry | undefined => entries(context).find((m) => m.ref === ref);
/** The departing model whose runtime is `ref`. */
export const departingOf = (context: SupervisorContext, ref: unknown): ModelEntry | undefined => context.departing.find((m) => m.ref === ref);
/** The model a request goes to: the one it names, or the default model. */
export const targetOf = (context: SupervisorContext, model: string | undefined): ModelEntry | null => (model !== undefined ? (context.models[model] ?? null) : defaultModel(context));
/** The id of a model's keep-alive timer: one per model, cancelled when it leaves idle. */
export const keepAliveId = (name: string) => `keepalive:${name}`;
export const without = <T,>(byName: Record<string, T>, names: readonly string[]): Record<string, T> => Object.fromEntries(Object.entries(byName).filter(([name]) => !names.includes(name)));
/** A model as it leaves the set: departing until its runtime reports its memory free. */
export const departed = (m: ModelEntry): ModelEntry => ({ ...m, phase: "unloading", expiresAt: null });
export const modelNamed = (event: SupervisorEvent): string | undefined => ("model" in event ? event.model : undefined);

/** The parked generations of request `request` (the client's id, or the job id it gave none). */
export const parkedOf = (context: SupervisorContext, request: string): ParkedRun[] => Object.values(context.parkedRuns).flat().filter((r) => (r.requestId ?? r.id) === request);

/** The name a load will have. */
export const loadName = (load: Pick<HeldLoad, "name" | "path">): string => load.name ?? defaultModelName(load.path);
/** Whether a load of this name is being admitted or waits to be. */
export const loadPending = (context: SupervisorContext, name: string): boolean =>
  (context.admission !== null && loadName(context.admission.request) === name) || context.waitingLoads.some((l) => loadName(l) === name);
