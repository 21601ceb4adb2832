import { assertEvent, assign, sendTo, setup } from "xstate";
import { KekahydeError, type ErrorCode } from "../errors.ts";
import { disposeModelActor, generateActor, loadModelActor, type EngineEvent } from "../engine/engineActors.ts";
import type { Engine, GenerateResult, LoadedModel, ModelInfo } from "../engine/types.ts";
import { monitorActor, type MonitorEvent } from "../monitor/monitorActor.ts";
import { EMPTY_SAMPLE, type ResourceSample, type ResourceSampler } from "../monitor/resourceSampler.ts";
import type { Ticket } from "./ticket.ts";

/**
 * The runtime machine: the single source of truth for what the daemon is doing.
 *
 *   empty ──LOAD──▶ loading ──LOAD.DONE──▶ idle ──RUN──▶ busy.generating ──STOP──▶ busy.cancelling
 *     ▲               │ LOAD.FAILED          ▲ ◀──GENERATION.DONE / FAILED───────────────┘
 *     └───────────────┘ (idle if the previous model was kept)
 *
 * `busy` owns the generation actor so that it lives across `generating` and `cancelling`; its two children
 * are the states users see. An engine failure during generation frees the model and lands in `empty` with
 * `lastError` set; a refused prompt (too long) returns to `idle`. Every request event carries a ticket, and every state says what it does with
 * every request: accept it, or refuse it with a typed error. SHUTDOWN from anywhere ends in `stopped`.
 */

export interface LoadResult {
  model: ModelInfo;
}
export interface StopResult {
  stopped: boolean;
}
export interface RunRequest {
  prompt: string;
  maxTokens?: number;
  onText?: (chunk: string) => void;
}

export type RuntimeEvent =
  | { type: "LOAD"; path: string; ticket: Ticket<LoadResult> }
  | ({ type: "RUN"; ticket: Ticket<GenerateResult> } & RunRequest)
  | { type: "STOP"; ticket: Ticket<StopResult> }
  | { type: "SHUTDOWN" }
  | EngineEvent
  | MonitorEvent;

export type RequestEvent = Extract<RuntimeEvent, { ticket: unknown }>;

export interface LastError {
  code: ErrorCode;
  message: string;
  at: string;
}

export interface RuntimeContext {
  engine: Engine;
  sampleResources: ResourceSampler;
  monitorIntervalMs: number;
  model: LoadedModel | null;
  load: { path: string; ticket: Ticket<LoadResult>; progress: number } | null;
  job: ({ ticket: Ticket<GenerateResult>; startedAt: number } & RunRequest) | null;
  stopTickets: Ticket<StopResult>[];
  lastError: LastError | null;
  resources: ResourceSample;
}

export interface RuntimeInput {
  engine: Engine;
  sampleResources: ResourceSampler;
  monitorIntervalMs?: number;
}

const errorRecord = (error: KekahydeError): LastError => ({ code: error.code, message: error.message, at: new Date().toISOString() });

export const runtimeMachine = setup({
  types: {
    context: {} as RuntimeContext,
    events: {} as RuntimeEvent,
    input: {} as RuntimeInput,
  },
  actors: {
    loadModel: loadModelActor,
    generate: generateActor,
    disposeModel: disposeModelActor,
    monitor: monitorActor,
  },
  guards: {
    hasModel: ({ context }) => context.model !== null,
    isEngineFailure: ({ event }) => event.type === "GENERATION.FAILED" && event.error.code === "ENGINE_FAILURE",
  },
  actions: {
    refuse: ({ event }, params: { code: ErrorCode; message: string }) => {
      if ("ticket" in event) event.ticket.reject(new KekahydeError(params.code, params.message));
    },
    answerNothingToStop: ({ event }) => {
      assertEvent(event, "STOP");
      event.ticket.resolve({ stopped: false });
    },
    storeSample: assign({
      resources: ({ event }) => {
        assertEvent(event, "MONITOR.SAMPLE");
        return event.sample;
      },
    }),

    acceptLoad: assign({
      load: ({ event }) => {
        assertEvent(event, "LOAD");
        return { path: event.path, ticket: event.ticket, progress: 0 };
      },
    }),
    recordLoadProgress: assign({
      load: ({ context, event }) => {
        assertEvent(event, "LOAD.PROGRESS");
        return context.load && { ...context.load, progress: event.progress };
      },
    }),
    forgetModel: assign({ model: null }),
    /** After an engine failure the model cannot be trusted: free it in the background and forget it. */
    discardModel: assign(({ context }) => {
      void context.model?.dispose().catch(() => {});
      return { model: null };
    }),
    storeModel: assign({
      model: ({ event }) => {
        assertEvent(event, "LOAD.DONE");
        return event.model;
      },
      lastError: null,
    }),
    resolveLoad: ({ context, event }) => {
      assertEvent(event, "LOAD.DONE");
      context.load?.ticket.resolve({ model: event.model.info });
    },
    rejectLoad: ({ context, event }) => {
      assertEvent(event, "LOAD.FAILED");
      context.load?.ticket.reject(event.error);
    },
    recordLoadError: assign({
      lastError: ({ event }) => {
        assertEvent(event, "LOAD.FAILED");
        return errorRecord(event.error);
      },
    }),
    clearLoad: assign({ load: null }),

    acceptRun: assign({
      job: ({ event }) => {
        assertEvent(event, "RUN");
        const { type: _type, ...request } = event;
        return { ...request, startedAt: Date.now() };
      },
    }),
    abortGeneration: sendTo("generation", { type: "ABORT" }),
    holdStopReply: assign({
      stopTickets: ({ context, event }) => {
        assertEvent(event, "STOP");
        return [...context.stopTickets, event.ticket];
      },
    }),
    resolveRun: ({ context, event }) => {
      assertEvent(event, "GENERATION.DONE");
      context.job?.ticket.resolve(event.result);
    },
    rejectRun: ({ context, event }) => {
      assertEvent(event, "GENERATION.FAILED");
      context.job?.ticket.reject(event.error);
    },
    recordEngineError: assign({
      lastError: ({ event }) => {
        assertEvent(event, "GENERATION.FAILED");
        return errorRecord(event.error);
      },
    }),
    answerStops: assign({
      stopTickets: ({ context }) => {
        for (const ticket of context.stopTickets) ticket.resolve({ stopped: true });
        return [];
      },
    }),
    clearJob: assign({ job: null }),

    failPendingWork: assign(({ context }) => {
      const error = new KekahydeError("SHUTTING_DOWN", "The daemon is shutting down.");
      context.load?.ticket.reject(error);
      context.job?.ticket.reject(error);
      for (const ticket of context.stopTickets) ticket.resolve({ stopped: true });
      return { load: null, job: null, stopTickets: [] };
    }),
  },
}).createMachine({
  id: "runtime",
  context: ({ input }) => ({
    engine: input.engine,
    sampleResources: input.sampleResources,
    monitorIntervalMs: input.monitorIntervalMs ?? 1000,
    model: null,
    load: null,
    job: null,
    stopTickets: [],
    lastError: null,
    resources: EMPTY_SAMPLE,
  }),
  invoke: {
    id: "monitor",
    src: "monitor",
    input: ({ context }) => ({ sample: context.sampleResources, intervalMs: context.monitorIntervalMs }),
  },
  on: {
    "MONITOR.SAMPLE": { actions: "storeSample" },
    SHUTDOWN: { target: ".stopping", actions: "failPendingWork" },
  },
  initial: "empty",
  states: {
    empty: {
      on: {
        LOAD: { target: "loading", actions: "acceptLoad" },
        RUN: { actions: { type: "refuse", params: { code: "NO_MODEL", message: "No model is loaded. POST /load_model with {\"path\": \"/abs/model.gguf\"} first." } } },
        STOP: { actions: "answerNothingToStop" },
      },
    },
    loading: {
      invoke: {
        id: "loader",
        src: "loadModel",
        input: ({ context }) => ({ engine: context.engine, path: context.load!.path, previous: context.model }),
      },
      on: {
        "LOAD.PROGRESS": { actions: "recordLoadProgress" },
        "LOAD.PREVIOUS_DISPOSED": { actions: "forgetModel" },
        "LOAD.DONE": { target: "idle", actions: ["storeModel", "resolveLoad", "clearLoad"] },
        "LOAD.FAILED": [
          { guard: "hasModel", target: "idle", actions: ["rejectLoad", "recordLoadError", "clearLoad"] },
          { target: "empty", actions: ["rejectLoad", "recordLoadError", "clearLoad"] },
        ],
        LOAD: { actions: { type: "refuse", params: { code: "MODEL_LOADING", message: "A model is already loading. Wait until GET /status shows state \"idle\", then retry." } } },
        RUN: { actions: { type: "refuse", params: { code: "MODEL_LOADING", message: "A model is loading. Wait until GET /status shows state \"idle\", then retry." } } },
        STOP: { actions: "answerNothingToStop" },
      },
    },
    idle: {
      on: {
        LOAD: { target: "loading", actions: "acceptLoad" },
        RUN: { target: "busy", actions: "acceptRun" },
        STOP: { actions: "answerNothingToStop" },
      },
    },
    busy: {
      invoke: {
        id: "generation",
        src: "generate",
        input: ({ context }) => ({
          model: context.model!,
          prompt: context.job!.prompt,
          maxTokens: context.job!.maxTokens,
          onText: context.job!.onText,
        }),
      },
      on: {
        "GENERATION.DONE": { target: "idle", actions: ["resolveRun", "answerStops", "clearJob"] },
        "GENERATION.FAILED": [
          {
            guard: "isEngineFailure",
            target: "empty",
            actions: ["rejectRun", "recordEngineError", "answerStops", "clearJob", "discardModel"],
          },
          { target: "idle", actions: ["rejectRun", "answerStops", "clearJob"] },
        ],
        LOAD: { actions: { type: "refuse", params: { code: "BUSY", message: "A generation is running. POST /stop first, then load the model." } } },
        RUN: { actions: { type: "refuse", params: { code: "BUSY", message: "A generation is already running. Wait for it, or POST /stop, then retry." } } },
      },
      initial: "generating",
      states: {
        generating: {
          on: { STOP: { target: "cancelling", actions: ["holdStopReply", "abortGeneration"] } },
        },
        cancelling: {
          on: { STOP: { actions: "holdStopReply" } },
        },
      },
    },
    stopping: {
      invoke: {
        id: "disposer",
        src: "disposeModel",
        input: ({ context }) => ({ model: context.model }),
        onDone: { target: "stopped", actions: "forgetModel" },
      },
      on: {
        LOAD: { actions: { type: "refuse", params: { code: "SHUTTING_DOWN", message: "The daemon is shutting down." } } },
        RUN: { actions: { type: "refuse", params: { code: "SHUTTING_DOWN", message: "The daemon is shutting down." } } },
        STOP: { actions: "answerNothingToStop" },
        SHUTDOWN: {},
      },
    },
    stopped: { type: "final" },
  },
});

export type RuntimeMachine = typeof runtimeMachine;
