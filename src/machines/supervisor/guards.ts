import { placementIs, quarantineOf } from "./admission.ts";
import { entries, loadPending, modelNamed, parkedOf } from "./queries.ts";
import { classifyReport, type ReportMeaning } from "./reports.ts";
import type { SupervisorContext, SupervisorEvent } from "./types.ts";

/**
 * The supervisor's guards: each a pure question about its context and the event. What each one means, in
 * words, is in docs/state-chart.md (src/machines/stateChartDoc.ts).
 */

type GuardArgs = { context: SupervisorContext; event: SupervisorEvent };
type Guard = (args: GuardArgs) => boolean;

/** A MODEL.PHASE branch's guard: the report means `meaning` (reports.ts), and nothing else. */
const reportMeans =
  (meaning: ReportMeaning): Guard =>
  ({ context, event }) =>
    event.type === "MODEL.PHASE" && classifyReport(context, event) === meaning;

export const supervisorGuards = {
  namesUnknownModel: ({ context, event }) => {
    const name = modelNamed(event);
    return name !== undefined && !(name in context.models) && !(event.type === "RUN" && event.load);
  },
  namesModelLoadingOnDemand: ({ context, event }) => event.type === "RUN" && event.model !== undefined && !(event.model in context.models) && loadPending(context, event.model),
  namesCatalogueModel: ({ context, event }) => event.type === "RUN" && event.model !== undefined && !(event.model in context.models) && event.load !== undefined,
  isParkedJob: ({ context, event }) => event.type === "CANCEL" && Object.values(context.parkedRuns).some((runs) => runs.some((r) => r.id === event.job)),
  stopsParkedRequest: ({ context, event }) => event.type === "STOP" && event.request !== undefined && parkedOf(context, event.request).length > 0,
  namesModel: ({ event }) => modelNamed(event) !== undefined,
  namesIdleModel: ({ context, event }) => context.models[modelNamed(event) ?? ""]?.phase === "idle",
  hasNoModels: ({ context }) => entries(context).length === 0,
  hasWaitingLoads: ({ context }) => context.waitingLoads.length > 0,

  // Where an admitted load goes: its placement, computed once when its plan arrived.
  isQuarantinedFile: ({ context }) => quarantineOf(context) !== null,
  placementFits: ({ context }) => context.admission?.placement?.ok === true,
  blockedByLoadingModels: ({ context }) => placementIs(context, "loading"),
  blockedByBusyModels: ({ context }) => placementIs(context, "busy"),
  overMachineMemory: ({ context }) => placementIs(context, "machine"),
  overMemoryBudget: ({ context }) => placementIs(context, "budget"),
  noneDeparting: ({ context }) => context.departing.length === 0,

  // What a runtime's MODEL.PHASE report means: one meaning each, so exactly one holds (reports.ts).
  isDepartedReport: reportMeans("departed"),
  isDepartingReport: reportMeans("departing"),
  isFreshRuntimeReport: reportMeans("fresh"),
  reportsIdleUnloadingAtOnce: reportMeans("idleUnloadAtOnce"),
  reportsIdleKeptForever: reportMeans("idleKeptForever"),
  reportsIdle: reportMeans("idle"),
  reportsEngineLoss: reportMeans("engineLoss"),
  reportsEmpty: reportMeans("empty"),
  /** A busy model's engine was lost and its runtime loads it again: the loss counts, the model stays. */
  reportsReloadAfterLoss: reportMeans("reloadAfterLoss"),
  reportsWork: reportMeans("work"),
  reportsFromUnknownRuntime: reportMeans("unknown"),
  reportsStopped: ({ event }) => event.type === "MODEL.PHASE" && event.phase === "stopped",

  isIdleModel: ({ context, event }) => event.type === "KEEPALIVE.EXPIRED" && context.models[event.name]?.phase === "idle",
  completesFanOutWithError: ({ context, event }) => {
    if (event.type !== "FANOUT.ANSWER") return false;
    const f = context.fanOuts[event.fanOut];
    return f !== undefined && f.waiting === 1 && (f.error !== null || !event.outcome.ok);
  },
  completesFanOut: ({ context, event }) => event.type === "FANOUT.ANSWER" && context.fanOuts[event.fanOut]?.waiting === 1,
  allStopped: ({ context }) => entries(context).length === 0 && context.departing.length === 0,
} satisfies Record<string, Guard>;
