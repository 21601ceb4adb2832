import { assertEvent, assign, enqueueActions, setup, type AnyActorRef } from "xstate";
import { KekahydeError, type ErrorCode } from "../errors.ts";
import { disposeModelActor, generateActor, loadModelActor, type EngineEvent } from "../engine/engineActors.ts";
import type { Engine, FinishReason, GenerateResult, GenerationRequest, LoadedModel, LoadSettings, ModelInfo } from "../engine/types.ts";
import type { Ticket } from "./ticket.ts";

/**
 * The runtime machine: the single source of truth for what one model slot of the daemon is doing. The
 * supervisor (supervisorMachine.ts) spawns one per loaded model.
 *
 *   empty ──LOAD──▶ loading ──LOAD.DONE──▶ idle ──RUN──▶ busy.generating ──STOP / CANCEL──▶ busy.cancelling
 *     ▲               │ LOAD.FAILED          ▲ ◀──GENERATION.DONE / FAILED, queue empty───────────┘
 *     └───────────────┘ (idle if the       ──UNLOAD──▶ empty      (queue not empty: busy again, next job)
 *                         previous model was kept)
 *
 * Each running job has its own generation actor, spawned under the job's id, so that up to `slots` jobs
 * decode together (llama-server's `-np`); `generating` and `cancelling` are the states users see. Further
 * RUNs wait in a bounded FIFO queue in the context and start, in order, as slots free up. An engine failure
 * frees the model and lands in `empty` with `lastError` set, answering every waiting request. Every request
 * event carries a ticket, and every state says what it does with every request: accept it, or refuse it
 * with a typed error. SHUTDOWN from anywhere ends in `stopped`. Each state tells the supervisor (if there
 * is one) when it is entered, which is how keep-alive and eviction know which models are busy.
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

/**
 * One generation request, waiting or running. Its ticket is its identity for CANCEL and for the engine's
 * reports; `id` names its generation actor while it runs.
 */
export interface Job {
  id: string;
  ticket: Ticket<GenerateResult>;
  request: GenerationRequest;
  onText?: (chunk: string) => void;
  enqueuedAt: number;
  stats: GenerationStats | null;
}

export type RuntimeEvent =
  | { type: "LOAD"; path: string; settings: LoadSettings; ticket: Ticket<LoadResult> }
  | { type: "RUN"; request: GenerationRequest; onText?: (chunk: string) => void; ticket: Ticket<GenerateResult> }
  | { type: "STOP"; all: boolean; ticket: Ticket<StopResult> }
  | { type: "UNLOAD"; ticket: Ticket<UnloadResult> }
  /** The client of a job went away: stop it if it runs, drop it if it waits. */
  | { type: "CANCEL"; job: Ticket<GenerateResult> }
  | { type: "SHUTDOWN" }
  | EngineEvent;

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

/** What a runtime tells its supervisor on entering each of its top-level states. */
export type RuntimePhase = "empty" | "loading" | "idle" | "busy" | "stopping" | "stopped";
export interface ModelPhaseEvent {
  type: "MODEL.PHASE";
  name: string;
  phase: RuntimePhase;
  /** The runtime actor that reports. */
  ref: AnyActorRef;
}

export interface RuntimeContext {
  name: string;
  supervisor: AnyActorRef | null;
  engine: Engine;
  maxQueue: number;
  maxGenerationMs: number | null;
  /** Jobs that may generate at once. */
  slots: number;
  model: LoadedModel | null;
  load: { path: string; settings: LoadSettings; ticket: Ticket<LoadResult>; progress: number } | null;
  running: Job[];
  queue: Job[];
  jobCount: number;
  /** Figures of the last job that ended. */
  lastGeneration: GenerationStats | null;
  stopTickets: Array<{ ticket: Ticket<StopResult>; dropped: number }>;
  lastError: LastError | null;
}

export interface RuntimeInput {
  engine: Engine;
  /** The model's name under the supervisor (default "default"). */
  name?: string;
  /** Receives a MODEL.PHASE event on entry to each top-level state. */
  supervisor?: AnyActorRef;
  /** Requests that may wait while the slots are full (default 16). */
  maxQueue?: number;
  /** Longest any generation may run; null or absent: no limit. */
  maxGenerationMs?: number | null;
  /** Jobs that may generate at once (default 1). */
  slots?: number;
}

export const DEFAULT_MAX_QUEUE = 16;

export const errorRecord = (error: KekahydeError): LastError => ({ code: error.code, message: error.message, at: new Date().toISOString() });

function jobFrom(event: Extract<RuntimeEvent, { type: "RUN" }>, n: number): Job {
  return { id: `generation-${n}`, ticket: event.ticket, request: event.request, onText: event.onText, enqueuedAt: Date.now(), stats: null };
}

const jobOf = (context: RuntimeContext, event: RuntimeEvent): Job | undefined =>
  "job" in event ? context.running.find((j) => j.ticket === event.job) : undefined;

function freshStats(): GenerationStats {
  return { startedAt: Date.now(), endedAt: null, promptTokens: null, completionTokens: 0, firstTokenMs: null, finishReason: null };
}

/** Refusals both machines give, word for word. */
export const SHUTTING_DOWN = { code: "SHUTTING_DOWN", message: "The daemon is shutting down." } as const;
export const NO_MODEL = { code: "NO_MODEL", message: "No model is loaded. POST /load_model with {\"path\": \"/abs/model.gguf\"} first." } as const;

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
  },
  guards: {
    hasModel: ({ context }) => context.model !== null,
    isEngineFailure: ({ event }) => event.type === "GENERATION.FAILED" && event.error.code === "ENGINE_FAILURE",
    hasFreeSlot: ({ context }) => context.running.length < context.slots,
    queueHasRoom: ({ context }) => context.queue.length < context.maxQueue,
    isRunningJob: ({ context, event }) => event.type === "CANCEL" && context.running.some((j) => j.ticket === event.job),
    isQueuedJob: ({ context, event }) => event.type === "CANCEL" && context.queue.some((j) => j.ticket === event.job),
    nothingRunning: ({ context }) => context.running.length === 0,
  },
  actions: {
    report: enqueueActions(({ context, enqueue, self }, params: { phase: RuntimePhase }) => {
      if (context.supervisor) enqueue.sendTo(context.supervisor, { type: "MODEL.PHASE", name: context.name, phase: params.phase, ref: self } satisfies ModelPhaseEvent);
    }),
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
      return { model: null, lastGeneration: null };
    }),
    storeModel: assign({
      model: ({ event }) => {
        assertEvent(event, "LOAD.DONE");
        return event.model;
      },
      lastError: null,
      lastGeneration: null,
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

    enqueueJob: assign(({ context, event }) => {
      assertEvent(event, "RUN");
      return { queue: [...context.queue, jobFrom(event, context.jobCount + 1)], jobCount: context.jobCount + 1 };
    }),
    refuseQueueFull: ({ context, event }) => {
      assertEvent(event, "RUN");
      const g = context.lastGeneration;
      const lastSeconds = g?.endedAt ? (g.endedAt - g.startedAt) / 1000 : 1;
      const retryAfter = Math.max(1, Math.ceil((lastSeconds * (context.queue.length + 1)) / context.slots));
      event.ticket.reject(
        new KekahydeError("QUEUE_FULL", `The queue is full (${context.maxQueue} requests waiting). Retry in about ${retryAfter} s.`, {
          retry_after_s: retryAfter,
          queue_length: context.queue.length,
        }),
      );
    },
    /** Moves waiting jobs into free slots, oldest first, each with its own generation actor. */
    fillSlots: assign(({ context, spawn }) => {
      const free = Math.max(0, context.slots - context.running.length);
      const starting = context.queue.slice(0, free).map((job) => ({ ...job, stats: freshStats() }));
      for (const job of starting) {
        spawn("generate", {
          id: job.id,
          input: {
            model: context.model!,
            job: job.ticket,
            request: job.request,
            onText: job.onText,
            timeLimitMs: Math.min(job.request.timeLimitMs ?? Infinity, context.maxGenerationMs ?? Infinity),
          },
        });
      }
      return { running: [...context.running, ...starting], queue: context.queue.slice(starting.length) };
    }),
    dropCancelledJob: assign({
      queue: ({ context, event }) => {
        assertEvent(event, "CANCEL");
        const gone = context.queue.find((j) => j.ticket === event.job);
        gone?.ticket.reject(new KekahydeError("CLIENT_CLOSED", "The client closed the request before it started."));
        return context.queue.filter((j) => j !== gone);
      },
    }),
    abortCancelledJob: enqueueActions(({ context, event, enqueue }) => {
      const job = jobOf(context, event);
      if (job) enqueue.sendTo(job.id, { type: "ABORT" });
    }),
    /** Holds the STOP's answer until the generations have ended; with `all`, drops the queue first. */
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
    abortAllJobs: enqueueActions(({ context, enqueue }) => {
      for (const job of context.running) enqueue.sendTo(job.id, { type: "ABORT" });
    }),
    recordProgress: assign({
      running: ({ context, event }) => {
        assertEvent(event, "GENERATION.PROGRESS");
        return context.running.map((j) => (j.ticket === event.job && j.stats ? { ...j, stats: { ...j.stats, ...event.progress } } : j));
      },
    }),
    /** Answers a job: at GENERATION.DONE, or earlier at GENERATION.STOPPED (then DONE finds it answered). */
    resolveRun: ({ context, event }) => {
      assertEvent(event, ["GENERATION.DONE", "GENERATION.STOPPED"]);
      jobOf(context, event)?.ticket.resolve(event.result);
    },
    rejectRun: ({ context, event }) => {
      assertEvent(event, "GENERATION.FAILED");
      jobOf(context, event)?.ticket.reject(event.error);
    },
    /** Ends a job's generation actor and keeps its figures as the last generation's. */
    releaseJob: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, ["GENERATION.DONE", "GENERATION.FAILED"]);
      const job = jobOf(context, event);
      if (!job) return;
      enqueue.stopChild(job.id);
      const r = event.type === "GENERATION.DONE" ? event.result : null;
      const ended: GenerationStats | null = job.stats && {
        ...job.stats,
        endedAt: Date.now(),
        ...(r && { promptTokens: r.promptTokens, completionTokens: r.completionTokens, firstTokenMs: r.firstTokenMs, finishReason: r.finishReason }),
      };
      enqueue.assign({ running: context.running.filter((j) => j !== job), lastGeneration: ended ?? context.lastGeneration });
    }),
    /** After an engine failure nothing can run on this model: every job, running or waiting, is answered. */
    failAllJobs: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "GENERATION.FAILED");
      const error = new KekahydeError("ENGINE_FAILURE", `The engine failed: ${event.error.message}`);
      for (const job of context.running) {
        job.ticket.reject(job.ticket === event.job ? event.error : error);
        enqueue.stopChild(job.id);
      }
      for (const job of context.queue) job.ticket.reject(error);
      enqueue.assign({ running: [], queue: [] });
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

    failPendingWork: enqueueActions(({ context, enqueue }) => {
      const error = new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message);
      context.load?.ticket.reject(error);
      for (const job of context.running) {
        job.ticket.reject(error);
        enqueue.stopChild(job.id);
      }
      for (const job of context.queue) job.ticket.reject(error);
      for (const { ticket, dropped } of context.stopTickets) ticket.resolve({ stopped: true, dropped });
      enqueue.assign({ load: null, running: [], queue: [], stopTickets: [] });
    }),
  },
}).createMachine({
  id: "runtime",
  context: ({ input }) => ({
    name: input.name ?? "default",
    supervisor: input.supervisor ?? null,
    engine: input.engine,
    maxQueue: input.maxQueue ?? DEFAULT_MAX_QUEUE,
    maxGenerationMs: input.maxGenerationMs ?? null,
    slots: Math.max(1, input.slots ?? 1),
    model: null,
    load: null,
    running: [],
    queue: [],
    jobCount: 0,
    lastGeneration: null,
    stopTickets: [],
    lastError: null,
  }),
  on: {
    SHUTDOWN: { target: ".stopping", actions: "failPendingWork" },
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
      entry: { type: "report", params: { phase: "idle" } },
      on: {
        LOAD: { target: "loading", actions: "acceptLoad" },
        RUN: { target: "busy", actions: ["enqueueJob", "fillSlots"] },
        STOP: { actions: "answerNothingToStop" },
        UNLOAD: { target: "empty", actions: ["discardModel", "answerUnloaded"] },
      },
    },
    busy: {
      entry: { type: "report", params: { phase: "busy" } },
      // Checked after every event: the last job has ended and none waits.
      always: { guard: "nothingRunning", target: "idle" },
      on: {
        "GENERATION.PROGRESS": { actions: "recordProgress" },
        // A stopped generation's requester is answered at once; its slot is freed at GENERATION.DONE.
        "GENERATION.STOPPED": { actions: "resolveRun" },
        RUN: [
          { guard: "queueHasRoom", actions: "enqueueJob" },
          { actions: "refuseQueueFull" },
        ],
        CANCEL: [
          { guard: "isRunningJob", actions: "abortCancelledJob" },
          { guard: "isQueuedJob", actions: "dropCancelledJob" },
        ],
        LOAD: { actions: { type: "refuse", params: { code: "BUSY", message: "A generation is running. POST /stop first (with {\"all\": true} to drop the queue too), then load the model." } } },
        UNLOAD: { actions: { type: "refuse", params: { code: "BUSY", message: "A generation is running. POST /stop first (with {\"all\": true} to drop the queue too), then unload." } } },
      },
      initial: "generating",
      states: {
        generating: {
          on: {
            RUN: [
              { guard: "queueHasRoom", actions: ["enqueueJob", "fillSlots"] },
              { actions: "refuseQueueFull" },
            ],
            STOP: { target: "cancelling", actions: ["acceptStop", "abortAllJobs"] },
            "GENERATION.DONE": { actions: ["resolveRun", "releaseJob", "fillSlots"] },
            "GENERATION.FAILED": [
              { guard: "isEngineFailure", target: "#runtime.empty", actions: ["failAllJobs", "recordEngineError", "answerStops", "discardModel"] },
              { actions: ["rejectRun", "releaseJob", "fillSlots"] },
            ],
          },
        },
        cancelling: {
          // Once every stopped generation has ended, the stops are answered and waiting jobs may start.
          always: { guard: "nothingRunning", target: "generating", actions: ["answerStops", "fillSlots"] },
          on: {
            STOP: { actions: "acceptStop" },
            "GENERATION.DONE": { actions: ["resolveRun", "releaseJob"] },
            "GENERATION.FAILED": [
              { guard: "isEngineFailure", target: "#runtime.empty", actions: ["failAllJobs", "recordEngineError", "answerStops", "discardModel"] },
              { actions: ["rejectRun", "releaseJob"] },
            ],
          },
        },
      },
    },
    stopping: {
      entry: { type: "report", params: { phase: "stopping" } },
      invoke: {
        id: "disposer",
        src: "disposeModel",
        input: ({ context }) => ({ model: context.model }),
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
