import { DEFAULT_MAX_QUEUE } from "../domain/defaults.ts";
import { BUSY, LOADING, NO_MODEL, SHUTTING_DOWN, UNLOADING } from "./refusals.ts";
import { runtimeSetup } from "./runtime/actions.ts";
import { modelOf } from "./runtime/models.ts";

/**
 * The runtime machine's chart: what one model slot of the daemon is doing. The supervisor
 * (supervisorMachine.ts) spawns one per loaded model.
 *
 *   empty ──LOAD──▶ loading ──LOAD.DONE──▶ loaded.idle ──RUN──▶ loaded.busy.generating ──STOP──▶ cancelling
 *     ▲               │ LOAD.FAILED           │  ▲ ◀──── the last job has ended, none waits ───────────┘
 *     ├───────────────┘                       │  ├─ UNLOAD ──▶ unloading ──(freed)──▶ empty
 *     │                                       │  └─ LOAD ──▶ replacing ──(old model freed)──▶ loading
 *     └──── ENGINE.LOST (the engine ended by itself) ◀── loaded
 *
 * Every state says what it does with every request: accept it, or refuse it with a typed error (refusals.ts).
 * Guards are tried top to bottom. The names are defined beside it: guards in runtime/guards.ts, actions (and
 * the `setup`) in runtime/actions.ts, types in runtime/types.ts; docs/state-chart.md explains every guard.
 */

/** STOP {"id"}: only that request's jobs. Running ones are stopped and the STOP answered at once... */
const STOP_RUNNING_REQUEST = { guard: "stopsRunningRequest", actions: ["abortRequest", "refuseStoppedRequest", "answerRequestStopped", "dropStoppedRequest"] } as const;
/** ...waiting ones are dropped... */
const STOP_WAITING_REQUEST = { guard: "stopsWaitingRequest", actions: ["refuseStoppedRequest", "answerRequestDropped", "dropStoppedRequest"] } as const;
/** ...and a request this model does not hold has nothing to stop. */
const STOP_OTHER_REQUEST = { guard: "namesRequest", actions: "answerNothingToStop" } as const;
const STOP_ONE_REQUEST = [STOP_RUNNING_REQUEST, STOP_WAITING_REQUEST, STOP_OTHER_REQUEST] as const;

/** While the model loads (`loading`, `replacing`): a generation waits for it in the bounded queue, anything that needs it loaded is refused. */
const WAITING_FOR_THE_MODEL = {
  LOAD: { actions: { type: "refuse", params: LOADING.load } },
  RUN: [{ guard: "roomWhileLoading", actions: "enqueueJob" }, { actions: { type: "refuse", params: LOADING.run } }],
  CANCEL: { guard: "isQueuedJob", actions: ["refuseCancelledJob", "dropCancelledJob"] },
  UNLOAD: { actions: { type: "refuse", params: LOADING.unload } },
  // Nothing runs yet: a STOP {"id"} can only find its request waiting.
  STOP: [STOP_WAITING_REQUEST, STOP_OTHER_REQUEST, { guard: "stopsAll", actions: ["refuseQueuedJobs", "answerStopDroppingQueue", "clearQueue"] }, { actions: "answerNothingToStop" }],
} as const;

export const runtimeMachine = runtimeSetup.createMachine({
  id: "runtime",
  context: ({ input }) => ({
    name: input.name ?? "default",
    supervisor: input.supervisor ?? null,
    maxQueue: input.maxQueue ?? DEFAULT_MAX_QUEUE,
    maxGenerationMs: input.maxGenerationMs ?? null,
    slots: Math.max(1, input.slots ?? 1),
    model: null,
    plan: null,
    load: null,
    reloads: 0,
    running: [],
    queue: [],
    lastGeneration: null,
    stopTickets: [],
    unloadTickets: [],
    lastError: null,
  }),
  on: {
    SHUTDOWN: { target: ".stopping", actions: ["refusePendingWork", "stopJobActors", "clearPendingWork"] },
  },
  initial: "empty",
  states: {
    empty: {
      entry: { type: "report", params: { phase: "empty" } },
      on: {
        LOAD: { target: "loading", actions: "acceptLoad" },
        RUN: { actions: { type: "refuse", params: NO_MODEL } },
        STOP: { actions: "answerNothingToStop" },
        UNLOAD: { actions: "answerNothingToUnload" },
      },
    },
    loading: {
      entry: { type: "report", params: { phase: "loading" } },
      invoke: {
        id: "loader",
        src: "loadModel",
        input: ({ context, self }) => ({ plan: context.load!.plan, owner: self.sessionId }),
      },
      on: {
        ...WAITING_FOR_THE_MODEL,
        "LOAD.PROGRESS": { actions: "recordLoadProgress" },
        "LOAD.DONE": [
          // Requests that came while it loaded start at once: the model goes straight to work.
          { guard: "hasWaitingJobs", target: "loaded.busy", actions: ["storeModel", "resolveLoad", "clearLoad", "startJobs"] },
          { target: "loaded", actions: ["storeModel", "resolveLoad", "clearLoad"] },
        ],
        "LOAD.FAILED": { target: "empty", actions: ["rejectLoad", "failWaitingJobs", "recordLoadError", "clearLoad", "clearQueue"] },
      },
    },
    loaded: {
      // The engine may end by itself (its process crashed): then nothing is left to free.
      invoke: { id: "engineWatch", src: "watchEngine", input: ({ self }) => ({ model: modelOf(self.system, self.sessionId) }) },
      on: {
        "ENGINE.LOST": [
          // Lost under requests: those fail, the model is loaded again and the waiting ones are served then.
          {
            guard: "canReloadAfterLoss",
            target: "loading",
            actions: ["failRunningJobsOnEngineLoss", "answerStops", "stopJobActors", "clearRunning", "clearStops", "recordEngineError", "forgetModel", "reloadLostModel"],
          },
          { target: "empty", actions: ["failJobsOnEngineLoss", "answerStops", "stopJobActors", "clearJobs", "clearStops", "recordEngineError", "forgetModel"] },
        ],
      },
      initial: "idle",
      states: {
        idle: {
          entry: { type: "report", params: { phase: "idle" } },
          on: {
            // Replacing the model: the old one is freed before the new one takes its memory.
            LOAD: { target: "#runtime.replacing", actions: "acceptLoad" },
            RUN: { target: "busy", actions: ["enqueueJob", "startJobs"] },
            STOP: { actions: "answerNothingToStop" },
            UNLOAD: { target: "#runtime.unloading", actions: "acceptUnload" },
          },
        },
        busy: {
          entry: { type: "report", params: { phase: "busy" } },
          // Checked after every event: the last job has ended and none waits.
          always: { guard: "nothingRunning", target: "idle" },
          on: {
            "JOB.PROGRESS": { guard: "isRunningJob", actions: "recordProgress" },
            // A stopped generation's requester is answered at once; its slot is freed at JOB.DONE.
            "JOB.STOPPED": { guard: "isRunningJob", actions: "answerJob" },
            RUN: [{ guard: "queueHasRoom", actions: "enqueueJob" }, { actions: "refuseQueueFull" }],
            CANCEL: [
              { guard: "isRunningJob", actions: "abortJob" },
              { guard: "isQueuedJob", actions: ["refuseCancelledJob", "dropCancelledJob"] },
            ],
            LOAD: { actions: { type: "refuse", params: BUSY.load } },
            UNLOAD: { actions: { type: "refuse", params: BUSY.unload } },
          },
          initial: "generating",
          states: {
            generating: {
              on: {
                RUN: [
                  // Tokens take no slot: they are answered at once, even with every slot generating.
                  { guard: "asksForTokens", actions: ["enqueueJob", "startJobs"] },
                  // A free slot starts the request at once, whatever --max-queue allows to wait.
                  { guard: "hasFreeSlot", actions: ["enqueueJob", "startJobs"] },
                  { guard: "queueHasRoom", actions: "enqueueJob" },
                  { actions: "refuseQueueFull" },
                ],
                STOP: [
                  ...STOP_ONE_REQUEST,
                  { guard: "stopsAll", target: "cancelling", actions: ["refuseQueuedJobs", "acceptStop", "clearQueue", "abortRunningJobs"] },
                  { target: "cancelling", actions: ["acceptStop", "abortRunningJobs"] },
                ],
                "JOB.DONE": { guard: "isRunningJob", actions: ["answerJob", "releaseJob", "clearReloads", "startJobs"] },
                "JOB.FAILED": [
                  {
                    guard: "isEngineFailure",
                    target: "#runtime.unloading",
                    actions: ["failAllJobs", "stopJobActors", "clearJobs", "recordEngineError"],
                  },
                  { guard: "isRunningJob", actions: ["rejectJob", "releaseJob", "startJobs"] },
                ],
              },
            },
            cancelling: {
              // Once every stopped generation has ended, the stops are answered and waiting jobs may start.
              always: { guard: "nothingRunning", target: "generating", actions: ["answerStops", "clearStops", "startJobs"] },
              on: {
                STOP: [
                  ...STOP_ONE_REQUEST,
                  { guard: "stopsAll", actions: ["refuseQueuedJobs", "acceptStop", "clearQueue"] },
                  { actions: "acceptStop" },
                ],
                "JOB.DONE": { guard: "isRunningJob", actions: ["answerJob", "releaseJob", "clearReloads"] },
                "JOB.FAILED": [
                  {
                    guard: "isEngineFailure",
                    target: "#runtime.unloading",
                    actions: ["failAllJobs", "answerStops", "clearStops", "stopJobActors", "clearJobs", "recordEngineError"],
                  },
                  { guard: "isRunningJob", actions: ["rejectJob", "releaseJob"] },
                ],
              },
            },
          },
        },
      },
    },
    // Freeing the model before a new one of the same name loads: to everyone else, part of loading.
    replacing: {
      entry: { type: "report", params: { phase: "loading" } },
      invoke: {
        id: "previousDisposer",
        src: "disposeModel",
        input: ({ self }) => ({ model: modelOf(self.system, self.sessionId) }),
        onDone: { target: "loading", actions: "forgetModel" },
      },
      on: WAITING_FOR_THE_MODEL,
    },
    unloading: {
      entry: { type: "report", params: { phase: "unloading" } },
      invoke: {
        id: "disposer",
        src: "disposeModel",
        input: ({ self }) => ({ model: modelOf(self.system, self.sessionId) }),
        onDone: { target: "empty", actions: ["forgetModel", "answerUnloads", "clearUnloads"] },
      },
      on: {
        RUN: { actions: { type: "refuse", params: UNLOADING.run } },
        LOAD: { actions: { type: "refuse", params: UNLOADING.load } },
        // Already freeing it: answered once it is free.
        UNLOAD: { actions: "acceptUnload" },
        STOP: { actions: "answerNothingToStop" },
      },
    },
    stopping: {
      entry: { type: "report", params: { phase: "stopping" } },
      invoke: {
        id: "finalDisposer",
        src: "disposeModel",
        input: ({ self }) => ({ model: modelOf(self.system, self.sessionId) }),
        onDone: { target: "stopped", actions: "forgetModel" },
      },
      on: {
        LOAD: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        RUN: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        UNLOAD: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        STOP: { actions: "answerNothingToStop" },
        SHUTDOWN: {},
      },
    },
    stopped: { type: "final", entry: { type: "report", params: { phase: "stopped" } } },
  },
});

export type RuntimeMachine = typeof runtimeMachine;

// What the rest of the daemon imports from here.
export type { GenerationStats, LastError, LoadResult, ModelPhaseEvent, RuntimeContext, RuntimePhase, StopResult, UnloadResult } from "./runtime/types.ts";
export { RELOADS_AFTER_LOSS } from "./runtime/rules.ts";
