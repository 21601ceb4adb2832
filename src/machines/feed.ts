import type { AnyActorRef, InspectionEvent } from "xstate";
import type { RuntimeSnapshot, RuntimeStateName } from "./selectors.ts";
import { stateName } from "./selectors.ts";

/** What /events streams and the log records: every state change of the machine, and resource samples. */
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
      model: string | null;
      last_error: string | null;
    }
  | { type: "sample"; at: string; cpu_usage: number; memory_usage: number; system: RuntimeSnapshot["context"]["resources"]["system"] };

export function activeIds(snapshot: RuntimeSnapshot, root = "runtime"): string[] {
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
 * Turns the machine's inspection stream into feed events: a transition whenever the visible state or the
 * queue changes, a sample whenever the monitor reports. Listeners are called synchronously and must not throw.
 */
export class RuntimeFeed {
  private listeners = new Set<(e: FeedEvent) => void>();
  private last: { state: RuntimeStateName; queue: number; active: string } | null = null;

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
      if (ev.type !== "@xstate.snapshot" || ev.actorRef !== root()) return;
      const snapshot = ev.snapshot as RuntimeSnapshot;
      const at = new Date().toISOString();
      if (ev.event.type === "MONITOR.SAMPLE") {
        const r = snapshot.context.resources;
        this.publish({ type: "sample", at, cpu_usage: r.cpu_usage, memory_usage: r.memory_usage, system: r.system });
        return;
      }
      const state = stateName(snapshot);
      const active = activeIds(snapshot);
      const queue = snapshot.context.queue.length;
      const key = active.join(",");
      if (this.last && this.last.active === key && this.last.queue === queue) return;
      this.publish({
        type: "transition",
        at,
        event: ev.event.type,
        from: this.last?.state ?? state,
        state,
        active,
        queue_length: queue,
        model: snapshot.context.model?.info.name ?? null,
        last_error: snapshot.context.lastError?.message ?? null,
      });
      this.last = { state, queue, active: key };
    };
  }
}
