import { chartOf, handlersOf, mermaidOf } from "./chart.ts";
import { runtimeMachine } from "./runtimeMachine.ts";
import { supervisorMachine } from "./supervisorMachine.ts";

type AnyChart = ReturnType<typeof chartOf>;

function stateTable(chart: AnyChart): string[] {
  return [
    "| state | type | actors it runs |",
    "| --- | --- | --- |",
    ...chart.nodes.map((n) => `| \`${n.id.slice(chart.id.length + 1)}\` | ${n.type} | ${n.invokes.map((i) => `\`${i}\``).join(", ") || ""} |`),
  ];
}

/** The text of docs/state-chart.md: generated, never edited by hand (`npm run docs:state-chart`). */
export function stateChartDoc(): string {
  const runtime = chartOf(runtimeMachine);
  const supervisor = chartOf(supervisorMachine);
  return [
    "# The state charts",
    "",
    "Generated from `src/machines/supervisorMachine.ts` and `src/machines/runtimeMachine.ts` by",
    "`npm run docs:state-chart`; a test fails when it is out of date. Transitions that only run actions",
    "(refusals, forwarding, queueing, progress) are left out of the pictures; see the machines for them. The",
    "daemon serves both charts live, with the current states highlighted, at `GET /`.",
    "",
    "## Supervisor",
    "",
    "One per daemon. It checks each load (file, memory estimate), evicts least recently used idle models to",
    "make room, spawns one runtime actor per model, routes requests by model name, and unloads models whose",
    "keep-alive has run out.",
    "",
    "```mermaid",
    mermaidOf(supervisor),
    "```",
    "",
    ...stateTable(supervisor),
    "",
    "Events it handles without changing state, in the order their guards are tried:",
    "",
    "| state | event | guard | actions |",
    "| --- | --- | --- | --- |",
    ...handlersOf(supervisorMachine).map((h) => `| \`${h.state}\` | \`${h.event}\` | ${h.guard ? `\`${h.guard}\`` : ""} | ${h.actions.map((a) => `\`${a}\``).join(", ")} |`),
    "",
    "## Runtime (one per loaded model)",
    "",
    "```mermaid",
    mermaidOf(runtime),
    "```",
    "",
    ...stateTable(runtime),
    "",
  ].join("\n");
}
