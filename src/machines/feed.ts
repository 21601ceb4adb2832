import type { AnyActorRef, InspectionEvent } from "xstate";
import type { GenerationStats } from "./runtimeMachine.ts";
import type { RuntimeSnapshot, RuntimeStateName, SupervisorSnapshot } from "./selectors.ts";
import { stateName } from "./selectors.ts";

/**
 * What /events streams and the log records: every state change of each model's runtime machine, every change
 * of the supervisor's set of models (loaded, evicted, expired, unloaded), and resource samples.
 */
export type FeedEvent =
  | {
      type: "transition";
      at: string;
      /** The event that caused it. */
      event: string;
      from: RuntimeStateName;
      state: RuntimeStateName;
      /** Ids of the active state nodes, outermost first ("runtime.busy", "runtime.busy.generating"). */
      active: string[];
      queue_length: number;
      /** The model's name. */
      model: string;
      last_error: string | null;
    }
  | {
      type: "models";
      at: string;
      /** The supervisor event that changed the set (LOAD admitted, KEEPALIVE.EXPIRED, MODEL.PHASE, ...). */
      event: string;
      models: Array<{ name: string; phase: string }>;
      /** Models on their way out (evicted, expired, unloaded), until they have freed their memory. */
      departing: number;
    }
  | {
      type: "supervisor";
      at: string;
      /** The event that caused it. */
      event: string;
      /** The supervisor's innermost active state before and after ("serving.ready", "stopping"). */
      from: string;
      state: string;
      /** Ids of its active state nodes, outermost first ("supervisor.serving", "supervisor.serving.ready"). */
      active: string[];
    }
  | { type: "generation"; at: string; model: string; stats: GenerationStats }
  /** Each quarter of a model's load. */
  | { type: "load_progress"; at: string; model: string; path: string; progress: number }
  | { type: "sample"; at: string; cpu_usage: number; memory_usage: number; system: SupervisorSnapshot["context"]["resources"]["system"] };

/** Ids of a machine snapshot's active state nodes, outermost first. */
export function activeIds(snapshot: { value: unknown }, root = "runtime"): string[] {
  const ids: string[] = [];
  let value: unknown = snapshot.value;
  let prefix = root;
  while (value !== undefined) {
    if (typeof value === "string") {
      ids.push(`${prefix}.${value}`);
      break;
    }
    const [key, inner] = Object.entries(value as Record<string, unknown>)[0];
    prefix = `${prefix}.${key}`;
    ids.push(prefix);
    value = inner;
  }
  return ids;
}

/**
 * Turns the machines' inspection stream into feed events: a transition whenever a model's visible state or
 * queue changes, a `models` event whenever the supervisor's set of models changes, a sample whenever the
 * monitor reports. Listeners are called synchronously and must not throw.
 */
export class RuntimeFeed {
  private listeners = new Set<(e: FeedEvent) => void>();
  private last = new WeakMap<AnyActorRef, { state: RuntimeStateName; queue: number; active: string; generation: GenerationStats | null; quarter: number }>();
  private lastModels = "";
  private lastSupervisorState: string[] | null = null;

  subscribe(listener: (e: FeedEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private publish(e: FeedEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** The `inspect` option of the root actor: `createActor(machine, { inspect: feed.inspector(() => actor) })`. */
  inspector(root: () => AnyActorRef | undefined): (e: InspectionEvent) => void {
    return (ev) => {
      if (ev.type !== "@xstate.snapshot") return;
      if (ev.actorRef === root()) return this.supervisorChanged(ev.snapshot as SupervisorSnapshot, ev.event.type);
      if ((ev.snapshot as { machine?: { id: string } }).machine?.id === "runtime") this.runtimeChanged(ev.actorRef as AnyActorRef, ev.snapshot as RuntimeSnapshot, ev.event.type);
    };
  }

  private supervisorChanged(snapshot: SupervisorSnapshot, event: string): void {
    const at = new Date().toISOString();
    if (event === "MONITOR.SAMPLE") {
      const r = snapshot.context.resources;
      this.publish({ type: "sample", at, cpu_usage: r.cpu_usage, memory_usage: r.memory_usage, system: r.system });
      return;
    }
    const active = activeIds(snapshot, "supervisor");
    if (this.lastSupervisorState && active.join() !== this.lastSupervisorState.join()) {
      const inner = (ids: string[]) => ids.at(-1)!.slice("supervisor.".length);
      this.publish({ type: "supervisor", at, event, from: inner(this.lastSupervisorState), state: inner(active), active });
    }
    this.lastSupervisorState = active;
    const models = Object.values(snapshot.context.models).map((m) => ({ name: m.name, phase: m.phase }));
    const key = JSON.stringify([models, snapshot.context.departing.length]);
    if (key === this.lastModels) return;
    this.lastModels = key;
    this.publish({ type: "models", at, event, models, departing: snapshot.context.departing.length });
  }

  private runtimeChanged(actor: AnyActorRef, snapshot: RuntimeSnapshot, event: string): void {
    const state = stateName(snapshot);
    const active = activeIds(snapshot);
    const queue = snapshot.context.queue.length;
    const key = active.join(",");
    const last = this.last.get(actor);
    const generation = snapshot.context.lastGeneration;
    if (generation && generation !== last?.generation) {
      this.publish({ type: "generation", at: new Date().toISOString(), model: snapshot.context.name, stats: generation });
    }
    const load = snapshot.context.load;
    const quarter = load ? Math.floor(load.progress * 4) : -1;
    if (load && quarter > (last?.quarter ?? -1)) {
      this.publish({ type: "load_progress", at: new Date().toISOString(), model: snapshot.context.name, path: load.plan.path, progress: Math.round(load.progress * 100) / 100 });
    }
    const unchanged = last ? last.active === key && last.queue === queue : event === "xstate.init";
    if (unchanged) return void this.last.set(actor, { state, queue, active: key, generation, quarter });
    this.publish({
      type: "transition",
      at: new Date().toISOString(),
      event,
      from: last?.state ?? state,
      state,
      active,
      queue_length: queue,
      model: snapshot.context.name,
      last_error: snapshot.context.lastError?.message ?? null,
    });
    this.last.set(actor, { state, queue, active: key, generation, quarter });
  }
}
