import type { AnyStateMachine } from "xstate";

/**
 * The state chart read from a machine's own definition: the nodes and the transitions between them. The
 * inspector page draws it and docs/state-chart.md is generated from it (a test keeps the two in sync), so the
 * picture people look at is the machine that runs.
 */

interface ChartNode {
  id: string;
  key: string;
  parent: string | null;
  type: string;
  initial: string | null;
  invokes: string[];
}

interface ChartEdge {
  source: string;
  target: string;
  event: string;
  guard: string | null;
}

export interface Chart {
  id: string;
  initial: string | null;
  nodes: ChartNode[];
  edges: ChartEdge[];
}

interface DefNode {
  id: string;
  key: string;
  type: string;
  initial?: { target: Array<string | { id: string }> };
  states: Record<string, DefNode>;
  invoke: Array<{ src: string | { id?: string } }>;
  transitions: Array<DefTransition>;
}

/** Eventless transitions (taken as soon as their guard holds) are not in the definition, only on the node. */
function alwaysOf(machine: AnyStateMachine, id: string): DefTransition[] {
  const node = machine.getStateNodeById(id) as unknown as { always?: Array<{ target?: Array<{ id: string }>; guard?: string | { type: string }; actions?: DefTransition["actions"] }> };
  return (node.always ?? []).map((t) => ({ eventType: "always", target: t.target, guard: t.guard, actions: t.actions }));
}

interface DefTransition {
  eventType: string;
  target?: Array<{ id: string }>;
  guard?: string | { type: string };
  actions?: Array<string | { type: string } | ((...args: never[]) => unknown)>;
}

/** One rule of a chart: in `state`, on `event`, if `guard` holds, run `actions` (and go to `target`). */
export interface ChartRule {
  state: string;
  event: string;
  guard: string | null;
  target: string | null;
  actions: string[];
}

const guardName = (t: DefTransition) => (t.guard === undefined ? null : typeof t.guard === "string" ? t.guard : t.guard.type);
const actionName = (a: string | { type: string } | ((...args: never[]) => unknown)) => (typeof a === "string" ? a : typeof a === "function" ? (a as { type?: string }).type ?? "(inline)" : a.type);

/**
 * Every transition of the definition, eventless ones included, in document order per state (the order
 * guards are tried): what docs/state-chart.md lists, so that each rule the daemon follows is named there.
 */
export function rulesOf(machine: AnyStateMachine): ChartRule[] {
  const rows: ChartRule[] = [];
  const local = (id: string) => (id === machine.id ? "(any)" : id.slice(machine.id.length + 1));
  const walk = (def: DefNode) => {
    for (const t of [...def.transitions, ...alwaysOf(machine, def.id)]) {
      const actions = (t.actions ?? []).map(actionName).filter((a) => !a.startsWith("xstate."));
      const target = t.target?.[0] ? local(t.target[0].id) : null;
      rows.push({ state: local(def.id), event: t.eventType, guard: guardName(t), target, actions });
    }
    for (const child of Object.values(def.states)) walk(child);
  };
  walk(machine.definition as unknown as DefNode);
  return rows;
}

const targetId = (t: string | { id: string }) => (typeof t === "string" ? t.replace(/^#/, "") : t.id);

export function chartOf(machine: AnyStateMachine): Chart {
  const nodes: ChartNode[] = [];
  const edges: ChartEdge[] = [];
  const walk = (def: DefNode, parent: string | null) => {
    if (parent !== null) {
      nodes.push({
        id: def.id,
        key: def.key,
        parent: parent === machine.id ? null : parent,
        type: def.type,
        initial: def.initial?.target?.[0] ? targetId(def.initial.target[0]) : null,
        invokes: def.invoke.map((i) => (typeof i.src === "string" ? i.src : (i.src.id ?? "actor"))),
      });
    }
    for (const t of [...def.transitions, ...alwaysOf(machine, def.id)]) {
      for (const target of t.target ?? []) {
        edges.push({ source: def.id, target: target.id, event: t.eventType, guard: guardName(t) });
      }
    }
    for (const child of Object.values(def.states)) walk(child, def.id);
  };
  const root = machine.definition as unknown as DefNode;
  walk(root, null);
  // A transition on the root ("from any state") is drawn from each top-level state it can leave.
  const expanded = edges.flatMap((e) =>
    e.source !== root.id
      ? [e]
      : nodes.filter((n) => n.parent === null && n.type !== "final" && n.id !== e.target).map((n) => ({ ...e, source: n.id })),
  );
  return { id: machine.id, initial: root.initial?.target?.[0] ? targetId(root.initial.target[0]) : null, nodes, edges: expanded };
}

/** The chart as a Mermaid stateDiagram (what docs/state-chart.md shows). */
export function mermaidOf(chart: Chart): string {
  const short = (id: string) => id.slice(chart.id.length + 1).replace(/\./g, "_");
  const lines = ["stateDiagram-v2"];
  const render = (parent: string | null, indent: string) => {
    const children = chart.nodes.filter((n) => n.parent === parent);
    const initial = parent === null ? chart.initial : chart.nodes.find((n) => n.id === parent)?.initial;
    if (initial) lines.push(`${indent}[*] --> ${short(initial)}`);
    for (const node of children) {
      // Every state is declared inside its parent, named by its own key, so that the picture nests as the chart does.
      lines.push(`${indent}state "${node.key}" as ${short(node.id)}`);
      if (chart.nodes.some((n) => n.parent === node.id)) {
        lines.push(`${indent}state ${short(node.id)} {`);
        render(node.id, indent + "  ");
        lines.push(`${indent}}`);
      }
      if (node.type === "final") lines.push(`${indent}${short(node.id)} --> [*]`);
    }
  };
  render(null, "  ");
  for (const e of chart.edges) lines.push(`  ${short(e.source)} --> ${short(e.target)}: ${e.event}${e.guard ? ` [${e.guard}]` : ""}`);
  return lines.join("\n");
}
