import { assertEvent, assign, sendTo, setup } from "xstate";
import { KekahydeError, type ErrorCode } from "../errors.ts";
import { disposeModelActor, generateActor, loadModelActor, type EngineEvent } from "../engine/engineActors.ts";
import type { Engine, FinishReason, GenerateResult, GenerationRequest, LoadedModel, LoadSettings, ModelInfo } from "../engine/types.ts";
import { monitorActor, type MonitorEvent } from "../monitor/monitorActor.ts";
import { EMPTY_SAMPLE, type ResourceSample, type ResourceSampler } from "../monitor/resourceSampler.ts";
import type { Ticket } from "./ticket.ts";

/**
 * The runtime machine: the single source of truth for what the daemon is doing.
 *
 *   empty ──LOAD──▶ loading ──LOAD.DONE──▶ idle ──RUN──▶ busy.generating ──STOP / CANCEL──▶ busy.cancelling
 *     ▲               │ LOAD.FAILED          ▲ ◀──GENERATION.DONE / FAILED, queue empty───────────┘
 *     └───────────────┘ (idle if the       ──UNLOAD──▶ empty      (queue not empty: busy again, next job)
 *                         previous model was kept)
 *
 * `busy` owns the generation actor so that it lives across `generating` and `cancelling`; its two children
 * are the states users see. While busy, further RUNs wait in a bounded FIFO queue in the context; when a
 * generation ends, `busy` is re-entered with the next job. An engine failure frees the model and lands in
 * `empty` with `lastError` set, answering every waiting request. Every request event carries a ticket,
 * and every state says what it does with every request: accept it, or refuse it with a typed error.
 * SHUTDOWN from anywhere ends in `stopped`.
 */

export interface LoadResult {
  model: ModelInfo;
}
export interface StopResult {
  stopped: boolean;
  /** Queued requests dropped by `{"all": true}`. */
  dropped: number;
}
export interface UnloadResult {
  unloaded: boolean;
}

/** One generation request, waiting or running. Its ticket is also its identity (CANCEL names it). */
export interface Job {
  ticket: Ticket<GenerateResult>;
  request: GenerationRequest;
  onText?: (chunk: string) => void;
  enqueuedAt: number;
}

export type RuntimeEvent =
  | { type: "LOAD"; path: string; settings: LoadSettings; ticket: Ticket<LoadResult> }
  | { type: "RUN"; request: GenerationRequest; onText?: (chunk: string) => void; ticket: Ticket<GenerateResult> }
  | { type: "STOP"; all: boolean; ticket: Ticket<StopResult> }
  | { type: "UNLOAD"; ticket: Ticket<UnloadResult> }
  /** The client of a job went away: stop it if it runs, drop it if it waits. */
  | { type: "CANCEL"; job: Ticket<GenerateResult> }
  | { type: "SHUTDOWN" }
  | EngineEvent
  | MonitorEvent;

export type RequestEvent = Extract<RuntimeEvent, { ticket: unknown }>;

export interface LastError {
  code: ErrorCode;
  message: string;
  at: string;
}

/** Figures of the running generation, or of the last one once it has ended. */
export interface GenerationStats {
  startedAt: number;
  endedAt: number | null;
  promptTokens: number | null;
  completionTokens: number;
  firstTokenMs: number | null;
  finishReason: FinishReason | null;
}

export interface RuntimeContext {
  engine: Engine;
  sampleResources: ResourceSampler;
  monitorIntervalMs: number;
  maxQueue: number;
  maxGenerationMs: number | null;
  model: LoadedModel | null;
  load: { path: string; settings: LoadSettings; ticket: Ticket<LoadResult>; progress: number } | null;
  job: Job | null;
  queue: Job[];
  generation: GenerationStats | null;
  stopTickets: Array<{ ticket: Ticket<StopResult>; dropped: number }>;
  lastError: LastError | null;
  resources: ResourceSample;
}

export interface RuntimeInput {
  engine: Engine;
  sampleResources: ResourceSampler;
  monitorIntervalMs?: number;
  /** Requests that may wait while one generates (default 16). */
  maxQueue?: number;
  /** Longest any generation may run; null or absent: no limit. */
  maxGenerationMs?: number | null;
}

export const DEFAULT_MAX_QUEUE = 16;

const errorRecord = (error: KekahydeError): LastError => ({ code: error.code, message: error.message, at: new Date().toISOString() });

function jobFrom(event: Extract<RuntimeEvent, { type: "RUN" }>): Job {
  return { ticket: event.ticket, request: event.request, onText: event.onText, enqueuedAt: Date.now() };
}

function freshStats(): GenerationStats {
  return { startedAt: Date.now(), endedAt: null, promptTokens: null, completionTokens: 0, firstTokenMs: null, finishReason: null };
}

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
    hasQueuedJobs: ({ context }) => context.queue.length > 0,
    queueHasRoom: ({ context }) => context.queue.length < context.maxQueue,
    isRunningJob: ({ context, event }) => event.type === "CANCEL" && context.job?.ticket === event.job,
    isQueuedJob: ({ context, event }) => event.type === "CANCEL" && context.queue.some((j) => j.ticket === event.job),
  },
  actions: {
    refuse: ({ event }, params: { code: ErrorCode; message: string }) => {
      if ("ticket" in event) event.ticket.reject(new KekahydeError(params.code, params.message));
    },
    answerNothingToStop: ({ event }) => {
      assertEvent(event, "STOP");
      event.ticket.resolve({ stopped: false, dropped: 0 });
    },
    answerNothingToUnload: ({ event }) => {
      assertEvent(event, "UNLOAD");
      event.ticket.resolve({ unloaded: false });
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
        return { path: event.path, settings: event.settings, ticket: event.ticket, progress: 0 };
      },
    }),
    recordLoadProgress: assign({
      load: ({ context, event }) => {
        assertEvent(event, "LOAD.PROGRESS");
        return context.load && { ...context.load, progress: event.progress };
      },
    }),
    forgetModel: assign({ model: null }),
    /** Frees the model in the background (the engine waits for it before the next load) and forgets it. */
    discardModel: assign(({ context }) => {
      void context.model?.dispose().catch(() => {});
      return { model: null, generation: null };
    }),
    storeModel: assign({
      model: ({ event }) => {
        assertEvent(event, "LOAD.DONE");
        return event.model;
      },
      lastError: null,
      generation: null,
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
    answerUnloaded: ({ event }) => {
      assertEvent(event, "UNLOAD");
      event.ticket.resolve({ unloaded: true });
    },

    startJob: assign({
      job: ({ event }) => {
        assertEvent(event, "RUN");
        return jobFrom(event);
      },
      generation: () => freshStats(),
    }),
    enqueueJob: assign({
      queue: ({ context, event }) => {
        assertEvent(event, "RUN");
        return [...context.queue, jobFrom(event)];
      },
    }),
    refuseQueueFull: ({ context, event }) => {
      assertEvent(event, "RUN");
      const g = context.generation;
      const lastSeconds = g?.endedAt ? (g.endedAt - g.startedAt) / 1000 : 1;
      const retryAfter = Math.max(1, Math.ceil(lastSeconds * (context.queue.length + 1)));
      event.ticket.reject(
        new KekahydeError("QUEUE_FULL", `The queue is full (${context.maxQueue} requests waiting). Retry in about ${retryAfter} s.`, {
          retry_after_s: retryAfter,
          queue_length: context.queue.length,
        }),
      );
    },
    startNextJob: assign(({ context }) => ({ job: context.queue[0], queue: context.queue.slice(1), generation: freshStats() })),
    dropCancelledJob: assign({
      queue: ({ context, event }) => {
        assertEvent(event, "CANCEL");
        const gone = context.queue.find((j) => j.ticket === event.job);
        gone?.ticket.reject(new KekahydeError("CLIENT_CLOSED", "The client closed the request before it started."));
        return context.queue.filter((j) => j !== gone);
      },
    }),
    /** Holds the STOP's answer until the generation has ended; with `all`, drops the queue first. */
    acceptStop: assign(({ context, event }) => {
      assertEvent(event, "STOP");
      const dropped = event.all ? context.queue : [];
      for (const job of dropped) {
        job.ticket.reject(new KekahydeError("QUEUE_CLEARED", "Cancelled by POST /stop {\"all\": true} before it started. Send it again if you still want it."));
      }
      return {
        queue: event.all ? [] : context.queue,
        stopTickets: [...context.stopTickets, { ticket: event.ticket, dropped: dropped.length }],
      };
    }),
    abortGeneration: sendTo("generation", { type: "ABORT" }),
    recordProgress: assign({
      generation: ({ context, event }) => {
        assertEvent(event, "GENERATION.PROGRESS");
        return context.generation && { ...context.generation, ...event.progress };
      },
    }),
    recordResult: assign({
      generation: ({ context, event }) => {
        assertEvent(event, "GENERATION.DONE");
        const r = event.result;
        return context.generation && {
          ...context.generation,
          endedAt: Date.now(),
          promptTokens: r.promptTokens,
          completionTokens: r.completionTokens,
          firstTokenMs: r.firstTokenMs,
          finishReason: r.finishReason,
        };
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
    rejectQueue: assign(({ context, event }) => {
      assertEvent(event, "GENERATION.FAILED");
      for (const job of context.queue) job.ticket.reject(new KekahydeError("ENGINE_FAILURE", `The engine failed before this request started: ${event.error.message}`));
      return { queue: [] };
    }),
    recordEngineError: assign({
      lastError: ({ event }) => {
        assertEvent(event, "GENERATION.FAILED");
        return errorRecord(event.error);
      },
    }),
    answerStops: assign({
      stopTickets: ({ context }) => {
        for (const { ticket, dropped } of context.stopTickets) ticket.resolve({ stopped: true, dropped });
        return [];
      },
    }),
    clearJob: assign({ job: null }),

    failPendingWork: assign(({ context }) => {
      const error = new KekahydeError("SHUTTING_DOWN", "The daemon is shutting down.");
      context.load?.ticket.reject(error);
      context.job?.ticket.reject(error);
      for (const job of context.queue) job.ticket.reject(error);
      for (const { ticket, dropped } of context.stopTickets) ticket.resolve({ stopped: true, dropped });
      return { load: null, job: null, queue: [], stopTickets: [] };
    }),
  },
}).createMachine({
  id: "runtime",
  context: ({ input }) => ({
    engine: input.engine,
    sampleResources: input.sampleResources,
    monitorIntervalMs: input.monitorIntervalMs ?? 1000,
    maxQueue: input.maxQueue ?? DEFAULT_MAX_QUEUE,
    maxGenerationMs: input.maxGenerationMs ?? null,
    model: null,
    load: null,
    job: null,
    queue: [],
    generation: null,
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
        UNLOAD: { actions: "answerNothingToUnload" },
      },
    },
    loading: {
      invoke: {
        id: "loader",
        src: "loadModel",
        input: ({ context }) => ({ engine: context.engine, path: context.load!.path, settings: context.load!.settings, previous: context.model }),
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
        UNLOAD: { actions: { type: "refuse", params: { code: "MODEL_LOADING", message: "A model is loading. Wait until it is loaded, then unload it." } } },
        STOP: { actions: "answerNothingToStop" },
      },
    },
    idle: {
      on: {
        LOAD: { target: "loading", actions: "acceptLoad" },
        RUN: { target: "busy", actions: "startJob" },
        STOP: { actions: "answerNothingToStop" },
        UNLOAD: { target: "empty", actions: ["discardModel", "answerUnloaded"] },
      },
    },
    busy: {
      invoke: {
        id: "generation",
        src: "generate",
        input: ({ context }) => ({
          model: context.model!,
          request: context.job!.request,
          onText: context.job!.onText,
          timeLimitMs: Math.min(context.job!.request.timeLimitMs ?? Infinity, context.maxGenerationMs ?? Infinity),
        }),
      },
      on: {
        "GENERATION.PROGRESS": { actions: "recordProgress" },
        "GENERATION.DONE": [
          { guard: "hasQueuedJobs", target: "busy", reenter: true, actions: ["recordResult", "resolveRun", "answerStops", "startNextJob"] },
          { target: "idle", actions: ["recordResult", "resolveRun", "answerStops", "clearJob"] },
        ],
        "GENERATION.FAILED": [
          {
            guard: "isEngineFailure",
            target: "empty",
            actions: ["rejectRun", "rejectQueue", "recordEngineError", "answerStops", "clearJob", "discardModel"],
          },
          { guard: "hasQueuedJobs", target: "busy", reenter: true, actions: ["rejectRun", "answerStops", "startNextJob"] },
          { target: "idle", actions: ["rejectRun", "answerStops", "clearJob"] },
        ],
        RUN: [
          { guard: "queueHasRoom", actions: "enqueueJob" },
          { actions: "refuseQueueFull" },
        ],
        CANCEL: { guard: "isQueuedJob", actions: "dropCancelledJob" },
        LOAD: { actions: { type: "refuse", params: { code: "BUSY", message: "A generation is running. POST /stop first (with {\"all\": true} to drop the queue too), then load the model." } } },
        UNLOAD: { actions: { type: "refuse", params: { code: "BUSY", message: "A generation is running. POST /stop first (with {\"all\": true} to drop the queue too), then unload." } } },
      },
      initial: "generating",
      states: {
        generating: {
          on: {
            STOP: { target: "cancelling", actions: ["acceptStop", "abortGeneration"] },
            CANCEL: [
              { guard: "isRunningJob", target: "cancelling", actions: "abortGeneration" },
              { guard: "isQueuedJob", actions: "dropCancelledJob" },
            ],
          },
        },
        cancelling: {
          on: { STOP: { actions: "acceptStop" } },
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
        UNLOAD: { actions: { type: "refuse", params: { code: "SHUTTING_DOWN", message: "The daemon is shutting down." } } },
        STOP: { actions: "answerNothingToStop" },
        SHUTDOWN: {},
      },
    },
    stopped: { type: "final" },
  },
});

export type RuntimeMachine = typeof runtimeMachine;
