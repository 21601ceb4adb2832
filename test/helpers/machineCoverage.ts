import type { AnyStateMachine, InspectionEvent } from "xstate";

/**
 * Which transitions of a machine's definition a test has taken, read from XState's own microstep
 * inspection events, so a model-based test can prove it walked every rule of the chart.
 */

interface TransitionDef {
  eventType: string;
  source: StateNodeDef;
  target?: Array<{ id: string }>;
  guard?: string | { type: string };
}
interface StateNodeDef {
  id: string;
  states: Record<string, StateNodeDef>;
  transitions: Map<string, TransitionDef[]>;
  always?: TransitionDef[];
}

const describeTransition = (t: TransitionDef): string => {
  const guard = t.guard === undefined ? "" : ` [${typeof t.guard === "string" ? t.guard : t.guard.type}]`;
  const target = t.target?.length ? ` → ${t.target.map((s) => s.id).join(",")}` : "";
  return `${t.source.id}: ${t.eventType || "always"}${guard}${target}`;
};

/**
 * Where a transition stands in its definition: its state, its event and its rank among that event's branches.
 * The same for a machine and its `.provide()`d copies (the engine is provided), whose transition objects differ.
 */
const keyOf = (t: TransitionDef): string => {
  const list = [...t.source.transitions.values(), t.source.always ?? []].find((l) => l.includes(t)) ?? [];
  return `${t.source.id}|${t.eventType}|${list.indexOf(t)}`;
};

/** Every transition of the definition, described. */
export function allTransitions(machine: AnyStateMachine): Map<TransitionDef, string> {
  const all = new Map<TransitionDef, string>();
  const walk = (node: StateNodeDef) => {
    for (const list of node.transitions.values()) for (const t of list) all.set(t, describeTransition(t));
    for (const t of node.always ?? []) all.set(t, describeTransition(t));
    for (const child of Object.values(node.states)) walk(child);
  };
  walk(machine.root as unknown as StateNodeDef);
  return all;
}

export class TransitionCoverage {
  readonly taken = new Set<string>();
  /** The `inspect` option for actors of `machine`. */
  readonly inspect = (e: InspectionEvent): void => {
    if (e.type !== "@xstate.microstep") return;
    for (const t of (e as unknown as { _transitions: TransitionDef[] })._transitions) this.taken.add(keyOf(t));
  };
  constructor(private readonly machine: AnyStateMachine) {}
  /** The transitions of the definition never taken. */
  missing(): string[] {
    return [...allTransitions(this.machine)].filter(([t]) => !this.taken.has(keyOf(t))).map(([, d]) => d);
  }
}
