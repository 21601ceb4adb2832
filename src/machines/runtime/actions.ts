import { assertEvent, assign, enqueueActions, setup } from "xstate";
import type { JobResult } from "../../domain/jobs.ts";
import { takesSlot } from "../../domain/jobs.ts";
import { disposeModelActor, jobActor, watchEngineActor } from "../../engine/engineActors.ts";
import { KekahydeError } from "../../errors.ts";
import { now } from "../clock.ts";
import { holdListener, holdTicket, listenerOf, rejectTicket, resolveTicket } from "../heldTickets.ts";
import { SHUTTING_DOWN, type Refusal } from "../refusals.ts";
import { runtimeGuards } from "./guards.ts";
import { dropModelHandle, modelOf, noEngineLoader } from "./models.ts";
import { errorRecord, freshStats, jobOf, retryAfterSeconds, slotsTaken } from "./rules.ts";
import type { GenerationStats, Job, LoadResult, ModelPhaseEvent, RuntimeContext, RuntimeEvent, RuntimeInput, RuntimePhase, StopResult, UnloadResult } from "./types.ts";

/**
 * What the runtime's chart (../runtimeMachine.ts) names: its types, its actors (src/engine/engineActors.ts),
 * its guards (./guards.ts) and, here, its actions. Effects (answering a ticket, spawning, sending) run after
 * the transition; `assign` only computes context. Times come from the actor system's clock (../clock.ts).
 */
const NO_INPUT: RuntimeInput = {};

/** A job's requester gets `error` (its text listener is let go with its ticket). */
const failJob = (job: Job, error: KekahydeError): void => rejectTicket(job.ticket, error);

export const runtimeSetup = setup({
  types: {
    context: {} as RuntimeContext,
    events: {} as RuntimeEvent,
    // Every input field is optional: a typed empty object says which type it is.
    input: NO_INPUT,
  },
  actors: {
    loadModel: noEngineLoader,
    runJob: jobActor,
    disposeModel: disposeModelActor,
    watchEngine: watchEngineActor,
  },
  guards: runtimeGuards,
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
      for (const job of context.queue) if (job.requestId === event.request) failJob(job, error);
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
      resolveTicket<LoadResult>(context.load?.ticket, { model: event.model });
    },
    rejectLoad: ({ context, event }) => {
      assertEvent(event, "LOAD.FAILED");
      rejectTicket(context.load?.ticket, event.error);
    },
    answerUnloads: ({ context }) => {
      for (const ticket of context.unloadTickets) resolveTicket<UnloadResult>(ticket, { unloaded: true });
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
      const job = jobOf(context, event.job);
      if (job) resolveTicket<JobResult>(job.ticket, event.result);
    },
    rejectJob: ({ context, event }) => {
      assertEvent(event, "JOB.FAILED");
      const job = jobOf(context, event.job);
      if (job) failJob(job, event.error);
    },
    refuseCancelledJob: ({ context, event }) => {
      assertEvent(event, "CANCEL");
      const job = context.queue.find((j) => j.id === event.job);
      if (job) failJob(job, new KekahydeError("CLIENT_CLOSED", "The client closed the request before it started."));
    },
    refuseQueuedJobs: ({ context }) => {
      const error = new KekahydeError("QUEUE_CLEARED", "Cancelled by POST /stop {\"all\": true} before it started. Send it again if you still want it.");
      for (const job of context.queue) failJob(job, error);
    },
    /** STOP {"all": true} while the model loads: nothing runs yet, the waiting requests are dropped. */
    answerStopDroppingQueue: ({ context, event }) => {
      assertEvent(event, "STOP");
      event.ticket.resolve({ stopped: false, dropped: context.queue.length });
    },
    /** The load that requests waited for failed: they get its error. */
    failWaitingJobs: ({ context, event }) => {
      assertEvent(event, "LOAD.FAILED");
      for (const job of context.queue) failJob(job, event.error);
    },
    answerStops: ({ context }) => {
      for (const { ticket, dropped } of context.stopTickets) resolveTicket<StopResult>(ticket, { stopped: true, dropped });
    },
    /** After an engine failure nothing can run on this model: the failed job gets its error, every other job one that says why. */
    failAllJobs: ({ context, event }) => {
      assertEvent(event, "JOB.FAILED");
      const error = new KekahydeError("ENGINE_FAILURE", `The engine failed: ${event.error.message}`);
      for (const job of [...context.running, ...context.queue]) failJob(job, job.id === event.job ? event.error : error);
    },
    failJobsOnEngineLoss: ({ context, event }) => {
      assertEvent(event, "ENGINE.LOST");
      for (const job of [...context.running, ...context.queue]) failJob(job, event.error);
    },
    /** The model is loaded again: only the requests that ran in the lost engine fail, the waiting ones stay. */
    failRunningJobsOnEngineLoss: ({ context, event }) => {
      assertEvent(event, "ENGINE.LOST");
      for (const job of context.running) failJob(job, event.error);
    },
    refusePendingWork: ({ context }) => {
      const error = new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message);
      rejectTicket(context.load?.ticket, error);
      for (const job of [...context.running, ...context.queue]) failJob(job, error);
      for (const { ticket, dropped } of context.stopTickets) resolveTicket<StopResult>(ticket, { stopped: true, dropped });
      for (const ticket of context.unloadTickets) resolveTicket<UnloadResult>(ticket, { unloaded: true });
    },

    // ── Jobs and their generation actors ────────────────────────────────────────────────────────────────
    /** Moves waiting jobs into free slots, oldest first, each with its own job actor; token jobs need no slot. */
    startJobs: enqueueActions(({ context, enqueue, self, system }) => {
      let free = Math.max(0, context.slots - slotsTaken(context));
      const chosen = context.queue.filter((job) => !takesSlot(job.work.kind) || free-- > 0);
      const starting = chosen.map((job) => ({ ...job, stats: freshStats(now(system)) }));
      for (const job of starting) {
        enqueue.spawnChild("runJob", {
          id: job.id,
          input: {
            model: modelOf(system, self.sessionId)!,
            job: job.id,
            work: job.work,
            onText: listenerOf(job.ticket),
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
    releaseJob: enqueueActions(({ context, event, enqueue, system }) => {
      assertEvent(event, ["JOB.DONE", "JOB.FAILED"]);
      const job = jobOf(context, event.job);
      if (!job) return; // guarded by isRunningJob
      enqueue.stopChild(job.id);
      const r = event.type === "JOB.DONE" && "finishReason" in event.result ? event.result : null;
      const ended: GenerationStats | null = job.stats && {
        ...job.stats,
        endedAt: now(system),
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
        return { plan: event.plan, ticket: holdTicket("load", event.ticket), progress: 0 };
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
      lastError: ({ event, system }) => {
        assertEvent(event, "LOAD.FAILED");
        return errorRecord(event.error, now(system));
      },
    }),
    /** The model is freed (or its engine lost): its facts leave the context, its handle the registry. */
    forgetModel: enqueueActions(({ enqueue, self, system }) => {
      enqueue(() => dropModelHandle(system, self.sessionId));
      enqueue.assign({ model: null, lastGeneration: null });
    }),
    acceptUnload: assign({
      unloadTickets: ({ context, event }) => {
        assertEvent(event, "UNLOAD");
        return [...context.unloadTickets, holdTicket("unload", event.ticket)];
      },
    }),
    clearUnloads: assign({ unloadTickets: [] }),
    enqueueJob: assign(({ context, event, system }) => {
      assertEvent(event, "RUN");
      const ticket = holdTicket("job", event.ticket);
      holdListener(ticket, event.onText);
      const job: Job = { id: event.id, requestId: event.requestId ?? event.id, ticket, work: event.work, enqueuedAt: now(system), stats: null };
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
        return [...context.stopTickets, { ticket: holdTicket("stop", event.ticket), dropped: event.all ? context.queue.length : 0 }];
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
      lastError: ({ event, system }) => {
        assertEvent(event, ["JOB.FAILED", "ENGINE.LOST"]);
        return errorRecord(event.error, now(system));
      },
    }),
    clearPendingWork: assign({ load: null, running: [], queue: [], stopTickets: [], unloadTickets: [] }),
  },
});
