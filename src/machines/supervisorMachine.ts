import { DEFAULT_KEEP_ALIVE_MS, DEFAULT_MEMORY_FRACTION } from "../domain/defaults.ts";
import type { KekahydeError } from "../errors.ts";
import { EMPTY_SAMPLE } from "../monitor/resourceSampler.ts";
import { NO_MODEL, SHUTTING_DOWN } from "./refusals.ts";
import { invalidFileParams, parkedRefusalParams, refusalParams, type RefusalReason } from "./supervisor/admission.ts";
import { supervisorSetup } from "./supervisor/actions.ts";

/**
 * The supervisor's chart: it owns the loaded models, one runtime-machine actor each (runtimeMachine.ts), and
 * decides which model a request goes to, which models make room for a new one (least recently used idle ones
 * first, within `maxModels`, the memory budget and the machine's memory), and when an idle model's
 * keep-alive has run out.
 *
 *   serving.ready ──LOAD──▶ admitting ──(file read once: the plan)──▶ placing ──(fits)──▶ evicting ──▶ ready
 *                  (checks the file)  └─(bad file)─▶ ready           │                 (evicted models freed;
 *                                                                     └─(no room: one guard per reason)─▶ ready
 *   SHUTDOWN ──▶ stopping (every model shuts down) ──▶ stopped
 *
 * Requests for a model are forwarded to its runtime with their ticket, so the runtime answers them; a STOP or
 * UNLOAD for every model is fanned out as one event per model, its answers gathered as FANOUT.ANSWER. A model
 * that leaves the set is `departing` until its runtime reports its memory free; a new load waits for that in
 * `evicting`. Guards are tried top to bottom. The names are defined beside it: guards in supervisor/guards.ts
 * (what a MODEL.PHASE report means: supervisor/reports.ts), actions (and the `setup`) in supervisor/actions.ts,
 * admission rules and refusals in supervisor/admission.ts, types in supervisor/types.ts.
 */

/**
 * A refused load, whatever the reason, one list: the requester and the generations parked for the model get
 * the refusal (`parkedError`: theirs, if it differs), it becomes the last error, and the admission ends.
 */
const refuseLoad = <Args,>(error: (args: Args) => { error: KekahydeError }, parkedError = error) =>
  [
    { type: "refuseAdmission", params: error },
    { type: "refuseParkedRuns", params: parkedError },
    { type: "recordError", params: error },
    "clearRefusedParkedRuns",
    "clearAdmission",
  ] as const;
/** A load the placement refuses, with the refusal of its reason (supervisor/admission.ts). */
const refusePlacement = (reason: RefusalReason) => refuseLoad(refusalParams(reason), parkedRefusalParams(reason));

export const supervisorMachine = supervisorSetup.createMachine({
  id: "supervisor",
  context: ({ input }) => ({
    monitorIntervalMs: input.monitorIntervalMs ?? 1000,
    maxModels: Math.max(1, input.maxModels ?? 1),
    maxMemory: input.maxMemory ?? { fraction: DEFAULT_MEMORY_FRACTION },
    keepAliveMs: input.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS,
    parallel: Math.max(1, input.parallel ?? 1),
    // Left out rather than undefined when not given: JSON of the context gives the same context back.
    ...(input.maxQueue !== undefined && { maxQueue: input.maxQueue }),
    maxGenerationMs: input.maxGenerationMs ?? null,
    models: {},
    departing: [],
    admission: null,
    waitingLoads: [],
    parkedRuns: {},
    fanOuts: {},
    fanOutCount: 0,
    uses: 0,
    lastError: null,
    crashes: {},
    resources: EMPTY_SAMPLE,
  }),
  invoke: {
    id: "monitor",
    src: "monitor",
    input: ({ context }) => ({ intervalMs: context.monitorIntervalMs }),
  },
  on: {
    "MONITOR.SAMPLE": { actions: "storeSample" },
    // Answers of fanned-out parts may arrive after shutdown has begun: gathered in any state.
    "FANOUT.ANSWER": [
      { guard: "completesFanOutWithError", actions: ["recordFanOutAnswer", "rejectFanOut", "closeFanOut"] },
      { guard: "completesFanOut", actions: ["recordFanOutAnswer", "resolveFanOut", "closeFanOut"] },
      { actions: "recordFanOutAnswer" },
    ],
  },
  initial: "serving",
  states: {
    serving: {
      on: {
        SHUTDOWN: { target: "stopping", actions: ["refusePendingLoads", "refuseAllParkedRuns", "clearLoads", "clearParkedRuns", "cancelAllKeepAlives", "shutDownModels"] },
        RUN: [
          { guard: "namesUnknownModel", actions: "refuseUnknownModel" },
          // A model named by a request but not loaded: the catalogue's file is loaded, the request waits for it.
          { guard: "namesModelLoadingOnDemand", actions: "parkRun" },
          { guard: "namesCatalogueModel", actions: ["parkRun", "requestLoadOnDemand"] },
          { guard: "hasNoModels", actions: { type: "refuse", params: NO_MODEL } },
          { actions: ["forwardRun", "markUsed"] },
        ],
        STOP: [
          { guard: "namesUnknownModel", actions: "refuseUnknownModel" },
          { guard: "stopsParkedRequest", actions: ["refuseParkedRequest", "dropParkedRequest"] },
          { guard: "namesModel", actions: "forwardStop" },
          { guard: "hasNoModels", actions: "answerNothingStopped" },
          { actions: "fanOutStop" },
        ],
        UNLOAD: [
          { guard: "namesUnknownModel", actions: "refuseUnknownModel" },
          { guard: "namesIdleModel", actions: { type: "retireModel", params: ({ event }) => ({ name: event.model!, ticket: event.ticket }) } },
          { guard: "namesModel", actions: "forwardUnload" },
          { guard: "hasNoModels", actions: "answerNothingUnloaded" },
          { actions: "fanOutUnload" },
        ],
        CANCEL: [{ guard: "isParkedJob", actions: ["refuseParkedJob", "dropParkedJob"] }, { actions: "forwardCancel" }],
        // What each report means is decided once (supervisor/reports.ts): exactly one of these guards holds.
        "MODEL.PHASE": [
          { guard: "isDepartedReport", actions: "releaseDeparted" },
          { guard: "isDepartingReport" },
          // A fresh runtime's first report is its initial `empty`, before its load starts: not a departure.
          { guard: "isFreshRuntimeReport" },
          { guard: "reportsIdleUnloadingAtOnce", actions: ["recordPhase", { type: "retireModel", params: ({ event }) => ({ name: event.name }) }] },
          { guard: "reportsIdleKeptForever", actions: "recordPhase" },
          { guard: "reportsIdle", actions: ["recordPhase", "armKeepAlive"] },
          { guard: "reportsEngineLoss", actions: ["recordModelError", "recordCrash", "dropModel"] },
          { guard: "reportsEmpty", actions: ["recordModelError", "dropModel"] },
          { guard: "reportsReloadAfterLoss", actions: ["recordModelError", "recordCrash", "recordPhase", "cancelKeepAlive"] },
          { guard: "reportsWork", actions: ["recordPhase", "cancelKeepAlive"] },
          // A runtime already let go reports late: nothing to do.
          { guard: "reportsFromUnknownRuntime" },
        ],
        "KEEPALIVE.EXPIRED": { guard: "isIdleModel", actions: { type: "retireModel", params: ({ event }) => ({ name: event.name }) } },
      },
      initial: "ready",
      states: {
        ready: {
          always: { guard: "hasWaitingLoads", target: "admitting", actions: "takeNextLoad" },
          on: {
            LOAD: { target: "admitting", actions: ["queueLoad", "takeNextLoad"] },
          },
        },
        admitting: {
          invoke: {
            id: "admission",
            src: "admitModel",
            input: ({ context }) => ({ path: context.admission!.request.path, settings: { ...context.admission!.request.settings, parallel: context.parallel } }),
            onDone: { target: "placing", actions: { type: "recordPlan", params: ({ event }) => ({ plan: event.output }) } },
            onError: { target: "ready", actions: refuseLoad(invalidFileParams) },
          },
          on: {
            LOAD: { actions: "queueLoad" },
          },
        },
        placing: {
          always: [
            { guard: "isQuarantinedFile", target: "ready", actions: refusePlacement("quarantined") },
            { guard: "placementFits", target: "evicting", actions: "retireEvicted" },
            { guard: "blockedByLoadingModels", target: "ready", actions: refusePlacement("loading") },
            { guard: "blockedByBusyModels", target: "ready", actions: refusePlacement("busy") },
            { guard: "overMachineMemory", target: "ready", actions: refusePlacement("machine") },
            { guard: "overMemoryBudget", target: "ready", actions: refusePlacement("budget") },
            // No reason above: never expected, but `placing` must not be left stuck.
            { target: "ready", actions: refusePlacement("unplaced") },
          ],
        },
        evicting: {
          // The new model takes memory only once every departing model has freed its own.
          always: { guard: "noneDeparting", target: "ready", actions: ["startLoad", "clearAdmission"] },
          on: {
            LOAD: { actions: "queueLoad" },
          },
        },
      },
    },
    stopping: {
      always: { guard: "allStopped", target: "stopped" },
      on: {
        LOAD: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        RUN: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        STOP: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        UNLOAD: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        "MODEL.PHASE": { guard: "reportsStopped", actions: "dropStopped" },
      },
    },
    stopped: { type: "final" },
  },
});

export type SupervisorMachine = typeof supervisorMachine;

// What the rest of the daemon imports from here.
export type { ModelEntry, RuntimeRef, SupervisorContext, SupervisorInput, SupervisorRequestEvent } from "./supervisor/types.ts";
export { defaultModel } from "./supervisor/queries.ts";
