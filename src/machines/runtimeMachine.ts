import { assertEvent, assign, enqueueActions, setup, type AnyActorRef } from "xstate";
import { DEFAULT_MAX_QUEUE } from "../domain/defaults.ts";
import type { FinishReason } from "../domain/generation.ts";
import { takesSlot, type JobResult, type Work } from "../domain/jobs.ts";
import type { ModelInfo, ModelPlan } from "../domain/models.ts";
import { disposeModelActor, jobActor, loadModelActor, watchEngineActor, type EngineEvent } from "../engine/engineActors.ts";
import type { Engine, LoadedModel } from "../engine/types.ts";
import { KekahydeError, type ErrorCode } from "../errors.ts";
import { BUSY, LOADING, NO_MODEL, SHUTTING_DOWN, UNLOADING, type Refusal } from "./refusals.ts";
import type { Ticket } from "./ticket.ts";

/**
 * The runtime machine: the single source of truth for what one model slot of the daemon is doing. The
 * supervisor (supervisorMachine.ts) spawns one per loaded model.
 *
 *   empty ──LOAD──▶ loading ──LOAD.DONE──▶ loaded.idle ──RUN──▶ loaded.busy.generating ──STOP──▶ cancelling
 *     ▲               │ LOAD.FAILED           │  ▲ ◀──── the last job has ended, none waits ───────────┘
 *     ├───────────────┘                       │  ├─ UNLOAD ──▶ unloading ──(freed)──▶ empty
 *     │                                       │  └─ LOAD ──▶ replacing ──(old model freed)──▶ loading
 *     └──── ENGINE.LOST (the engine ended by itself) ◀── loaded
 *
 * `empty` means the model's memory is free: freeing a model is the `unloading` state (or `replacing`, before a
 * new model of the same name), which invokes the disposal. Each running job has its own generation actor, spawned under the job's id, so that up to `slots`
 * jobs decode together (llama-server's `-np`). Further RUNs wait in a bounded FIFO queue and start, in order,
 * as slots free up. Every request event carries a ticket, and every state says what it does with every
 * request: accept it, or refuse it with a typed error. Transitions are pure: `assign` only computes context;
 * answering a ticket, spawning, sending and freeing are named actions or actors, run after the transition.
 * SHUTDOWN from anywhere ends in `stopped`. Each state tells the supervisor (if any) when it is entered.
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

/** One generation request, waiting or running. `id` names it in CANCEL, in the engine's reports and as its actor. */
export interface Job {
  id: string;
  /** The client's id for its request (X-Request-Id), which POST /stop {"id"} names; the job id if it gave none. */
  requestId: string;
  ticket: Ticket<JobResult>;
  /** What it asks of the model: a generation, embeddings, ranking, tokens. */
  work: Work;
  onText?: (chunk: string) => void;
  enqueuedAt: number;
  stats: GenerationStats | null;
}

export type RuntimeEvent =
  | { type: "LOAD"; plan: ModelPlan; ticket: Ticket<LoadResult> }
  | { type: "RUN"; id: string; requestId?: string; work: Work; onText?: (chunk: string) => void; ticket: Ticket<JobResult> }
  /** Stops the running generations (`all`: and drops the waiting ones), or only the jobs of request `request`. */
  | { type: "STOP"; all: boolean; request?: string; ticket: Ticket<StopResult> }
  | { type: "UNLOAD"; ticket: Ticket<UnloadResult> }
  /** The client of a job went away: stop it if it runs, drop it if it waits. */
  | { type: "CANCEL"; job: string }
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
  /** Of the prompt's tokens, those found in the sequence's key-value cache (not evaluated again). */
  cachedTokens: number | null;
  completionTokens: number;
  firstTokenMs: number | null;
  finishReason: FinishReason | null;
  /** Speculative decoding: tokens drafted and checked, and those that held; null when it did not speculate. */
  draftTokens: number | null;
  acceptedDraftTokens: number | null;
}

/** What a runtime tells its supervisor on entering each state that matters to it. */
export type RuntimePhase = "empty" | "loading" | "idle" | "busy" | "unloading" | "stopping" | "stopped";
export interface ModelPhaseEvent {
  type: "MODEL.PHASE";
  name: string;
  phase: RuntimePhase;
  /** The runtime actor that reports. */
  ref: AnyActorRef;
  /** Why the model failed, when it did (set on the `empty` that a failed load or a lost engine leads to). */
  error: LastError | null;
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
  /** The plan the model was loaded with, to load it again after its engine is lost mid-request. */
  plan: ModelPlan | null;
  /**
   * The load under way, or waiting for the previous model to be freed (`replacing`). No ticket: the runtime
   * loads the model again by itself after its engine was lost.
   */
  load: { plan: ModelPlan; ticket: Ticket<LoadResult> | null; progress: number } | null;
  /** Reloads after a lost engine since a job last ended well: bounded, so a model that always crashes stays down. */
  reloads: number;
  running: Job[];
  queue: Job[];
  /** Figures of the last job that ended. */
  lastGeneration: GenerationStats | null;
  stopTickets: Array<{ ticket: Ticket<StopResult>; dropped: number }>;
  /** UNLOADs answered once the model is freed. */
  unloadTickets: Array<Ticket<UnloadResult>>;
  /** Why the model last failed (its load, or its engine); cleared by a successful load. */
  lastError: LastError | null;
}

export interface RuntimeInput {
  engine: Engine;
  /** The model's name under the supervisor (default "default"). */
  name?: string;
  /** Receives a MODEL.PHASE event on entry to each reported state. */
  supervisor?: AnyActorRef;
  /** Requests that may wait while the slots are full (default 16; 0: none wait). */
  maxQueue?: number;
  /** Longest any generation may run; null or absent: no limit. */
  maxGenerationMs?: number | null;
  /** Jobs that may generate at once (default 1). */
  slots?: number;
}

/**
 * Times in a row a model is loaded again after its engine was lost under a request (no job ended well in
 * between). A request that kills its engine (a grammar llama.cpp cannot hold, a prompt past the first-token
 * limit) must not take the model from everyone else; a file that crashes on every request stops being retried.
 */
export const RELOADS_AFTER_LOSS = 2;

/** Failures of the engine itself, not of the request: after one, nothing can run on the model. */
const ENGINE_FAILURES = new Set<ErrorCode>(["ENGINE_FAILURE", "ENGINE_CRASHED", "ENGINE_TIMEOUT"]);

export const errorRecord = (error: KekahydeError): LastError => ({ code: error.code, message: error.message, at: new Date().toISOString() });

const jobOf = (context: RuntimeContext, id: string): Job | undefined => context.running.find((j) => j.id === id);
const jobIdOf = (event: RuntimeEvent): string | null => ("job" in event ? event.job : null);
const requestOf = (event: RuntimeEvent): string | null => (event.type === "STOP" ? (event.request ?? null) : null);

/** Slots in use: every running job but token lookups, which need no context sequence. */
const slotsTaken = (context: RuntimeContext): number => context.running.filter((j) => takesSlot(j.work.kind)).length;

function freshStats(): GenerationStats {
  return { startedAt: Date.now(), endedAt: null, promptTokens: null, cachedTokens: null, completionTokens: 0, firstTokenMs: null, finishReason: null, draftTokens: null, acceptedDraftTokens: null };
}

/** How long to wait before retrying a refused request: the last generation's length times the queue ahead. */
function retryAfterSeconds(context: RuntimeContext): number {
  const g = context.lastGeneration;
  const lastSeconds = g?.endedAt ? (g.endedAt - g.startedAt) / 1000 : 1;
  return Math.max(1, Math.ceil((lastSeconds * (context.queue.length + 1)) / context.slots));
}

/**
 * What `loading` and `replacing` do with requests: a generation waits for the model (in the bounded queue),
 * anything that needs the model loaded is refused.
 */
/** STOP {"id"}: only that request's jobs, running (stopped, answered at once) or waiting (dropped). */
const STOP_ONE_REQUEST = [
  { guard: "stopsRunningRequest", actions: ["abortRequest", "refuseStoppedRequest", "answerRequestStopped", "dropStoppedRequest"] },
  { guard: "stopsWaitingRequest", actions: ["refuseStoppedRequest", "answerRequestDropped", "dropStoppedRequest"] },
  { guard: "namesRequest", actions: "answerNothingToStop" },
] as const;

const WAITING_FOR_THE_MODEL = {
  LOAD: { actions: { type: "refuse", params: LOADING.load } },
  RUN: [{ guard: "roomWhileLoading", actions: "enqueueJob" }, { actions: { type: "refuse", params: LOADING.run } }],
  CANCEL: { guard: "isQueuedJob", actions: ["refuseCancelledJob", "dropCancelledJob"] },
  UNLOAD: { actions: { type: "refuse", params: LOADING.unload } },
  STOP: [STOP_ONE_REQUEST[1], STOP_ONE_REQUEST[2], { guard: "stopsAll", actions: ["refuseQueuedJobs", "answerStopDroppingQueue", "clearQueue"] }, { actions: "answerNothingToStop" }],
} as const;

export const runtimeMachine = setup({
  types: {
    context: {} as RuntimeContext,
    events: {} as RuntimeEvent,
    input: {} as RuntimeInput,
  },
  actors: {
    loadModel: loadModelActor,
    runJob: jobActor,
    disposeModel: disposeModelActor,
    watchEngine: watchEngineActor,
  },
  guards: {
    hasFreeSlot: ({ context }) => slotsTaken(context) < context.slots,
    asksForTokens: ({ event }) => event.type === "RUN" && !takesSlot(event.work.kind),
    queueHasRoom: ({ context }) => context.queue.length < context.maxQueue,
    nothingRunning: ({ context }) => context.running.length === 0,
    isRunningJob: ({ context, event }) => context.running.some((j) => j.id === jobIdOf(event)),
    isQueuedJob: ({ context, event }) => context.queue.some((j) => j.id === jobIdOf(event)),
    isEngineFailure: ({ event }) => event.type === "JOB.FAILED" && ENGINE_FAILURES.has(event.error.code),
    stopsAll: ({ event }) => event.type === "STOP" && event.all,
    namesRequest: ({ event }) => requestOf(event) !== null,
    stopsRunningRequest: ({ context, event }) => context.running.some((j) => j.requestId === requestOf(event)),
    stopsWaitingRequest: ({ context, event }) => context.queue.some((j) => j.requestId === requestOf(event)),
    hasWaitingJobs: ({ context }) => context.queue.length > 0,
    /** The engine was lost under running requests, and the model has not been reloaded too often already. */
    canReloadAfterLoss: ({ context }) => context.running.length > 0 && context.reloads < RELOADS_AFTER_LOSS,
    /**
     * While the model loads, the requests that wait for it are not behind busy slots: up to `slots` of them
     * start when it is loaded, so they wait whatever --max-queue is (0 included), and --max-queue more beside.
     */
    roomWhileLoading: ({ context }) => context.queue.length < context.slots + context.maxQueue,
  },
  actions: {
    // ── Telling the supervisor ──────────────────────────────────────────────────────────────────────────
    report: enqueueActions(({ context, enqueue, self }, params: { phase: RuntimePhase }) => {
      if (context.supervisor) {
        enqueue.sendTo(context.supervisor, { type: "MODEL.PHASE", name: context.name, phase: params.phase, ref: self, error: context.lastError } satisfies ModelPhaseEvent);
      }
    }),

    // ── Answers (effects: run after the transition) ─────────────────────────────────────────────────────
    refuse: ({ event }, params: Refusal) => {
      if ("ticket" in event) event.ticket.reject(new KekahydeError(params.code, params.message));
    },
    answerRequestStopped: ({ context, event }) => {
      assertEvent(event, "STOP");
      event.ticket.resolve({ stopped: true, dropped: context.queue.filter((j) => j.requestId === event.request).length });
    },
    answerRequestDropped: ({ context, event }) => {
      assertEvent(event, "STOP");
      event.ticket.resolve({ stopped: false, dropped: context.queue.filter((j) => j.requestId === event.request).length });
    },
    refuseStoppedRequest: ({ context, event }) => {
      assertEvent(event, "STOP");
      const error = new KekahydeError("QUEUE_CLEARED", "Stopped by POST /stop {\"id\"} before it started. Send it again if you still want it.");
      for (const job of context.queue) if (job.requestId === event.request) job.ticket.reject(error);
    },
    answerNothingToStop: ({ event }) => {
      assertEvent(event, "STOP");
      event.ticket.resolve({ stopped: false, dropped: 0 });
    },
    answerNothingToUnload: ({ event }) => {
      assertEvent(event, "UNLOAD");
      event.ticket.resolve({ unloaded: false });
    },
    resolveLoad: ({ context, event }) => {
      assertEvent(event, "LOAD.DONE");
      context.load?.ticket?.resolve({ model: event.model.info });
    },
    rejectLoad: ({ context, event }) => {
      assertEvent(event, "LOAD.FAILED");
      context.load?.ticket?.reject(event.error);
    },
    answerUnloads: ({ context }) => {
      for (const ticket of context.unloadTickets) ticket.resolve({ unloaded: true });
    },
    refuseQueueFull: ({ context, event }) => {
      assertEvent(event, "RUN");
      const retryAfter = retryAfterSeconds(context);
      const waiting = context.maxQueue === 0 ? "--max-queue is 0: no request waits" : `${context.maxQueue} requests waiting`;
      event.ticket.reject(
        new KekahydeError("QUEUE_FULL", `All ${context.slots} slot(s) are generating and the queue is full (${waiting}). Retry in about ${retryAfter} s.`, {
          retry_after_s: retryAfter,
          queue_length: context.queue.length,
        }),
      );
    },
    /** Answers a job: at JOB.DONE, or earlier at JOB.STOPPED (then DONE finds it answered). */
    answerJob: ({ context, event }) => {
      assertEvent(event, ["JOB.DONE", "JOB.STOPPED"]);
      jobOf(context, event.job)?.ticket.resolve(event.result);
    },
    rejectJob: ({ context, event }) => {
      assertEvent(event, "JOB.FAILED");
      jobOf(context, event.job)?.ticket.reject(event.error);
    },
    refuseCancelledJob: ({ context, event }) => {
      assertEvent(event, "CANCEL");
      context.queue.find((j) => j.id === event.job)?.ticket.reject(new KekahydeError("CLIENT_CLOSED", "The client closed the request before it started."));
    },
    refuseQueuedJobs: ({ context }) => {
      const error = new KekahydeError("QUEUE_CLEARED", "Cancelled by POST /stop {\"all\": true} before it started. Send it again if you still want it.");
      for (const job of context.queue) job.ticket.reject(error);
    },
    /** STOP {"all": true} while the model loads: nothing runs yet, the waiting requests are dropped. */
    answerStopDroppingQueue: ({ context, event }) => {
      assertEvent(event, "STOP");
      event.ticket.resolve({ stopped: false, dropped: context.queue.length });
    },
    /** The load that requests waited for failed: they get its error. */
    failWaitingJobs: ({ context, event }) => {
      assertEvent(event, "LOAD.FAILED");
      for (const job of context.queue) job.ticket.reject(event.error);
    },
    answerStops: ({ context }) => {
      for (const { ticket, dropped } of context.stopTickets) ticket.resolve({ stopped: true, dropped });
    },
    /** After an engine failure nothing can run on this model: the failed job gets its error, every other job one that says why. */
    failAllJobs: ({ context, event }) => {
      assertEvent(event, "JOB.FAILED");
      const error = new KekahydeError("ENGINE_FAILURE", `The engine failed: ${event.error.message}`);
      for (const job of [...context.running, ...context.queue]) job.ticket.reject(job.id === event.job ? event.error : error);
    },
    failJobsOnEngineLoss: ({ context, event }) => {
      assertEvent(event, "ENGINE.LOST");
      for (const job of [...context.running, ...context.queue]) job.ticket.reject(event.error);
    },
    /** The model is loaded again: only the requests that ran in the lost engine fail, the waiting ones stay. */
    failRunningJobsOnEngineLoss: ({ context, event }) => {
      assertEvent(event, "ENGINE.LOST");
      for (const job of context.running) job.ticket.reject(event.error);
    },
    refusePendingWork: ({ context }) => {
      const error = new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message);
      context.load?.ticket?.reject(error);
      for (const job of [...context.running, ...context.queue]) job.ticket.reject(error);
      for (const { ticket, dropped } of context.stopTickets) ticket.resolve({ stopped: true, dropped });
      for (const ticket of context.unloadTickets) ticket.resolve({ unloaded: true });
    },

    // ── Jobs and their generation actors ────────────────────────────────────────────────────────────────
    /** Moves waiting jobs into free slots, oldest first, each with its own job actor; token jobs need no slot. */
    startJobs: enqueueActions(({ context, enqueue }) => {
      let free = Math.max(0, context.slots - slotsTaken(context));
      const chosen = context.queue.filter((job) => !takesSlot(job.work.kind) || free-- > 0);
      const starting = chosen.map((job) => ({ ...job, stats: freshStats() }));
      for (const job of starting) {
        enqueue.spawnChild("runJob", {
          id: job.id,
          input: {
            model: context.model!,
            job: job.id,
            work: job.work,
            onText: job.onText,
            timeLimitMs: Math.min(job.work.kind === "generate" ? (job.work.request.timeLimitMs ?? Infinity) : Infinity, context.maxGenerationMs ?? Infinity),
          },
        });
      }
      enqueue.assign({ running: [...context.running, ...starting], queue: context.queue.filter((job) => !chosen.includes(job)) });
    }),
    abortJob: enqueueActions(({ event, enqueue }) => {
      assertEvent(event, "CANCEL");
      enqueue.sendTo(event.job, { type: "ABORT" });
    }),
    abortRequest: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "STOP");
      for (const job of context.running) if (job.requestId === event.request) enqueue.sendTo(job.id, { type: "ABORT" });
    }),
    abortRunningJobs: enqueueActions(({ context, enqueue }) => {
      for (const job of context.running) enqueue.sendTo(job.id, { type: "ABORT" });
    }),
    stopJobActors: enqueueActions(({ context, enqueue }) => {
      for (const job of context.running) enqueue.stopChild(job.id);
    }),
    /** Ends a job's generation actor and keeps its figures as the last generation's. */
    releaseJob: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, ["JOB.DONE", "JOB.FAILED"]);
      const job = jobOf(context, event.job)!;
      enqueue.stopChild(job.id);
      const r = event.type === "JOB.DONE" && "finishReason" in event.result ? event.result : null;
      const ended: GenerationStats | null = job.stats && {
        ...job.stats,
        endedAt: Date.now(),
        ...(r && { promptTokens: r.promptTokens, cachedTokens: r.cachedTokens ?? 0, completionTokens: r.completionTokens, firstTokenMs: r.firstTokenMs, finishReason: r.finishReason, draftTokens: r.draftTokens ?? null, acceptedDraftTokens: r.acceptedDraftTokens ?? null }),
      };
      // The last generation's figures are a generation's: other jobs leave them as they were.
      const generation = job.work.kind === "generate" ? ended : null;
      enqueue.assign({ running: context.running.filter((j) => j !== job), lastGeneration: generation ?? context.lastGeneration });
    }),

    // ── Context ─────────────────────────────────────────────────────────────────────────────────────────
    acceptLoad: assign({
      load: ({ event }) => {
        assertEvent(event, "LOAD");
        return { plan: event.plan, ticket: event.ticket, progress: 0 };
      },
      reloads: 0,
    }),
    /** The same plan again, with no one's ticket: the runtime's own load after its engine was lost. */
    reloadLostModel: assign(({ context }) => ({ load: { plan: context.plan!, ticket: null, progress: 0 }, reloads: context.reloads + 1 })),
    /** A job ended well: the engine works, so a later loss may be reloaded again. */
    clearReloads: assign({ reloads: 0 }),
    recordLoadProgress: assign({
      load: ({ context, event }) => {
        assertEvent(event, "LOAD.PROGRESS");
        return context.load && { ...context.load, progress: event.progress };
      },
    }),
    storeModel: assign({
      model: ({ event }) => {
        assertEvent(event, "LOAD.DONE");
        return event.model;
      },
      plan: ({ context }) => context.load?.plan ?? context.plan,
      lastError: null,
      lastGeneration: null,
    }),
    clearLoad: assign({ load: null }),
    recordLoadError: assign({
      lastError: ({ event }) => {
        assertEvent(event, "LOAD.FAILED");
        return errorRecord(event.error);
      },
    }),
    forgetModel: assign({ model: null, lastGeneration: null }),
    acceptUnload: assign({
      unloadTickets: ({ context, event }) => {
        assertEvent(event, "UNLOAD");
        return [...context.unloadTickets, event.ticket];
      },
    }),
    clearUnloads: assign({ unloadTickets: [] }),
    enqueueJob: assign(({ context, event }) => {
      assertEvent(event, "RUN");
      const job: Job = { id: event.id, requestId: event.requestId ?? event.id, ticket: event.ticket, work: event.work, onText: event.onText, enqueuedAt: Date.now(), stats: null };
      return { queue: [...context.queue, job] };
    }),
    dropCancelledJob: assign({
      queue: ({ context, event }) => {
        assertEvent(event, "CANCEL");
        return context.queue.filter((j) => j.id !== event.job);
      },
    }),
    dropStoppedRequest: assign({
      queue: ({ context, event }) => {
        assertEvent(event, "STOP");
        return context.queue.filter((j) => j.requestId !== event.request);
      },
    }),
    /** Holds the STOP's answer until the generations have ended. */
    acceptStop: assign({
      stopTickets: ({ context, event }) => {
        assertEvent(event, "STOP");
        return [...context.stopTickets, { ticket: event.ticket, dropped: event.all ? context.queue.length : 0 }];
      },
    }),
    clearQueue: assign({ queue: [] }),
    clearStops: assign({ stopTickets: [] }),
    recordProgress: assign({
      running: ({ context, event }) => {
        assertEvent(event, "JOB.PROGRESS");
        return context.running.map((j) => (j.id === event.job && j.stats ? { ...j, stats: { ...j.stats, ...event.progress } } : j));
      },
    }),
    clearJobs: assign({ running: [], queue: [] }),
    clearRunning: assign({ running: [] }),
    recordEngineError: assign({
      lastError: ({ event }) => {
        assertEvent(event, ["JOB.FAILED", "ENGINE.LOST"]);
        return errorRecord(event.error);
      },
    }),
    clearPendingWork: assign({ load: null, running: [], queue: [], stopTickets: [], unloadTickets: [] }),
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
        input: ({ context }) => ({ engine: context.engine, plan: context.load!.plan }),
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
      invoke: { id: "engineWatch", src: "watchEngine", input: ({ context }) => ({ model: context.model }) },
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
        input: ({ context }) => ({ model: context.model }),
        onDone: { target: "loading", actions: "forgetModel" },
      },
      on: WAITING_FOR_THE_MODEL,
    },
    unloading: {
      entry: { type: "report", params: { phase: "unloading" } },
      invoke: {
        id: "disposer",
        src: "disposeModel",
        input: ({ context }) => ({ model: context.model }),
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
