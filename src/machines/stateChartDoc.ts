import { chartOf, mermaidOf } from "./chart.ts";
import { runtimeMachine } from "./runtimeMachine.ts";

/** The text of docs/state-chart.md: generated, never edited by hand (`npm run docs:state-chart`). */
export function stateChartDoc(): string {
  const chart = chartOf(runtimeMachine);
  const rows = chart.nodes.map((n) => `| \`${n.id.slice(chart.id.length + 1)}\` | ${n.type} | ${n.invokes.map((i) => `\`${i}\``).join(", ") || ""} |`);
  return [
    "# The runtime state chart",
    "",
    "Generated from `src/machines/runtimeMachine.ts` by `npm run docs:state-chart`; a test fails when it is out of",
    "date. Transitions that only run actions (refusals, queueing, progress) are left out of the picture; see the",
    "machine for them. The daemon serves the same chart live, with the current state highlighted, at `GET /`.",
    "",
    "```mermaid",
    mermaidOf(chart),
    "```",
    "",
    "| state | type | actors it runs |",
    "| --- | --- | --- |",
    ...rows,
    "",
  ].join("\n");
}
