import type { AnyStateMachine } from "xstate";
import { chartOf, mermaidOf, rulesOf } from "./chart.ts";
import { runtimeMachine } from "./runtimeMachine.ts";
import { supervisorMachine } from "./supervisorMachine.ts";

/**
 * What each guard of the two machines means, in words. docs/state-chart.md prints it beside the rules; a test
 * fails when a machine has a guard this list does not explain, or this list explains one no machine has.
 */
export const GUARD_MEANINGS: Record<string, string> = {
  // runtime
  hasFreeSlot: "fewer jobs hold a slot than the model has (`--parallel`); token lookups hold none",
  asksForTokens: "the request only tokenizes or detokenizes: it needs no slot",
  queueHasRoom: "fewer requests wait than `--max-queue` allows (0: none may wait)",
  nothingRunning: "no job is generating any more",
  isRunningJob: "the event (CANCEL, an engine report) names a job that is generating on this model",
  isQueuedJob: "the event names a job waiting in this model's queue",
  isEngineFailure: "the generation failed because the engine did (it failed, crashed or was stopped for a time limit), not because of the request",
  hasWaitingJobs: "requests wait for the model (they came while it loaded)",
  canReloadAfterLoss: "the engine was lost while requests ran, and the model has been reloaded fewer than 2 times in a row since a job last ended well: it is loaded again",
  roomWhileLoading: "fewer requests wait for the loading model than `--parallel` plus `--max-queue` (those up to `--parallel` start once it is loaded)",
  namesRequest: 'the STOP names one request (`{"id"}`), which this model does not hold',
  stopsRunningRequest: 'the STOP names a request (`{"id"}`) that is generating on this model',
  stopsWaitingRequest: 'the STOP names a request (`{"id"}`) that waits in this model\'s queue',
  stopsParkedRequest: 'the STOP names a request (`{"id"}`) that waits for its model to be admitted',
  stopsAll: 'the STOP asks to drop the queue too (`{"all": true}`)',
  // supervisor
  namesUnknownModel: "the request names a model that is not loaded",
  namesModel: "the request names a loaded model",
  namesModelLoadingOnDemand: "a generation names a model that is not loaded but is being admitted: it waits for that load",
  namesCatalogueModel: "a generation names a model that is not loaded but is in the models directories: it is loaded, and the generation waits for it",
  isParkedJob: "the client that left was waiting for its model to be admitted",
  namesIdleModel: "the request names a loaded model that is idle",
  hasNoModels: "no model is loaded",
  hasWaitingLoads: "loads wait to be admitted",
  isQuarantinedFile: "the file (same path, size and modification time) crashed its engine while loading, or 3 times: it is not loaded again",
  reportsEngineLoss: "a loaded model reports empty because its engine crashed or was stopped for a time limit (counted against its file)",
  placementFits: "the model fits: within `--max-models`, the budget and the machine's memory, after evicting the least recently used idle models",
  blockedByLoadingModels: "no room, and every model in the way is still loading",
  blockedByBusyModels: "no room, and models in the way are working",
  overMachineMemory: "the model does not fit in the machine's free memory even with every idle model evicted",
  overMemoryBudget: "the model does not fit the `--max-memory` budget even with every idle model evicted",
  noneDeparting: "every model that left the set has freed its memory",
  isDepartedReport: "a model that left the set reports its memory free (or that it stopped)",
  isDepartingReport: "a model that left the set reports anything else",
  isFreshRuntimeReport: "a runtime just spawned reports its initial `empty`, before its load starts",
  reportsIdleUnloadingAtOnce: "a model reports idle and its keep-alive is 0",
  reportsIdleKeptForever: "a model reports idle and its keep-alive is -1 (forever)",
  reportsIdle: "a model reports idle (its keep-alive starts)",
  reportsEmpty: "a loaded model reports empty: its load failed, or its engine failed or was lost",
  reportsReloadAfterLoss: "a busy model reports loading: its engine was lost under requests and its runtime loads it again (the loss counts against its file)",
  reportsWork: "a loaded model reports loading, busy, unloading or stopping",
  reportsFromUnknownRuntime: "a runtime the supervisor has already let go (neither loaded nor departing) reports late: ignored",
  reportsStopped: "a model reports that it has shut down",
  isIdleModel: "the model whose keep-alive ran out is (still) idle",
  completesFanOutWithError: "the last answer of a STOP/UNLOAD sent to every model has come, and one part failed",
  completesFanOut: "the last answer of a STOP/UNLOAD sent to every model has come",
  allStopped: "every model has shut down",
};

type AnyChart = ReturnType<typeof chartOf>;

function stateTable(chart: AnyChart): string[] {
  return [
    "| state | type | actors it runs |",
    "| --- | --- | --- |",
    ...chart.nodes.map((n) => `| \`${n.id.slice(chart.id.length + 1)}\` | ${n.type} | ${n.invokes.map((i) => `\`${i}\``).join(", ") || ""} |`),
  ];
}

const code = (s: string) => `\`${s}\``;

function ruleTable(machine: AnyStateMachine): string[] {
  return [
    "| state | event | guard | goes to | actions |",
    "| --- | --- | --- | --- | --- |",
    ...rulesOf(machine).map((r) => `| ${code(r.state)} | ${code(r.event)} | ${r.guard ? code(r.guard) : ""} | ${r.target ? code(r.target) : ""} | ${r.actions.map(code).join(", ")} |`),
  ];
}

function guardList(machine: AnyStateMachine): string[] {
  const names = [...new Set(rulesOf(machine).flatMap((r) => (r.guard ? [r.guard] : [])))];
  return names.map((g) => `- ${code(g)}: ${GUARD_MEANINGS[g] ?? "(not explained)"}`);
}

/** The text of docs/state-chart.md: generated, never edited by hand (`npm run docs:state-chart`). */
export function stateChartDoc(): string {
  const runtime = chartOf(runtimeMachine);
  const supervisor = chartOf(supervisorMachine);
  return [
    "# The state charts",
    "",
    "Generated from `src/machines/supervisorMachine.ts` and `src/machines/runtimeMachine.ts` by",
    "`npm run docs:state-chart`; a test fails when it is out of date. Every rule the daemon follows is a",
    "transition below: in a state, on an event, if its guard holds (guards are tried top to bottom), run the",
    "actions and go to the target. Transitions are pure: `assign` actions only compute context; answering a",
    "request, spawning, sending and freeing are named actions or actors, run after the transition. The daemon",
    "serves both charts live, the active states lit, at `GET /`.",
    "",
    "## Supervisor",
    "",
    "One per daemon. It admits each load (reads the file once and plans it), decides where it goes (evicting",
    "least recently used idle models, or refusing with one transition per reason), spawns one runtime actor",
    "per model, routes requests by model name, fans STOP/UNLOAD for every model out as one event per model and",
    "gathers the answers as events, and keeps one cancellable keep-alive timer per idle model.",
    "",
    "```mermaid",
    mermaidOf(supervisor),
    "```",
    "",
    ...stateTable(supervisor),
    "",
    "### Rules",
    "",
    ...ruleTable(supervisorMachine),
    "",
    "### Guards",
    "",
    ...guardList(supervisorMachine),
    "",
    "## Runtime (one per loaded model)",
    "",
    "`empty` means the model's memory is free: freeing it is the `unloading` state, or `replacing` before a new",
    "model of the same name loads (to the supervisor, part of loading). `loaded` watches the engine,",
    "which may end by itself (a crashed engine process). Up to `--parallel` jobs generate at once; a free slot",
    "starts a request at once, and only when every slot is busy does it wait in the queue (`--max-queue`).",
    "",
    "```mermaid",
    mermaidOf(runtime),
    "```",
    "",
    ...stateTable(runtime),
    "",
    "### Rules",
    "",
    ...ruleTable(runtimeMachine),
    "",
    "### Guards",
    "",
    ...guardList(runtimeMachine),
    "",
  ].join("\n");
}
