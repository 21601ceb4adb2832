import { assertEvent, assign, enqueueActions, setup } from "xstate";
import type { JobResult } from "../../domain/jobs.ts";
import { defaultModelName, type ModelPlan } from "../../domain/models.ts";
import { KekahydeError } from "../../errors.ts";
import { monitorActor } from "../../monitor/monitorActor.ts";
import { EMPTY_SAMPLE } from "../../monitor/resourceSampler.ts";
import { now } from "../clock.ts";
import { SHUTTING_DOWN, type Refusal } from "../refusals.ts";
import { errorRecord } from "../runtime/rules.ts";
import type { LoadResult, StopResult, UnloadResult } from "../runtime/types.ts";
import { runtimeMachine } from "../runtimeMachine.ts";
import { holdListener, holdTicket, rejectTicket, resolveTicket, takeTicket } from "../heldTickets.ts";
import { createTicket, type Ticket } from "../ticket.ts";
import { CRASHES_BEFORE_QUARANTINE, placementOf, unknownModel } from "./admission.ts";
import { admitModel } from "./actors.ts";
import { supervisorGuards } from "./guards.ts";
import type { Placement } from "./placement.ts";
import { departed, entries, entryOf, keepAliveId, loadName, modelNamed, parkedOf, targetOf, without } from "./queries.ts";
import type { Admission, CrashRecord, FanOut, ModelEntry, ParkedRun, SupervisorContext, SupervisorEvent, SupervisorInput } from "./types.ts";

/**
 * What the supervisor's chart (../supervisorMachine.ts) names: its types, its actors, its guards (./guards.ts)
 * and, here, its actions. Effects (answering a ticket, spawning, sending, timers) run after the transition;
 * `assign` only computes context. Times come from the actor system's clock (../clock.ts).
 */
const NO_INPUT: SupervisorInput = {};

export const supervisorSetup = setup({
  types: {
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    // Every input field is optional: a typed empty object says which type it is.
    input: NO_INPUT,
  },
  actors: {
    runtime: runtimeMachine,
    admitModel,
    // Placeholders until provided (createSupervisorLogic, ../logic.ts): no engine, no readings.
    monitor: monitorActor(() => Promise.resolve(EMPTY_SAMPLE)),
  },
  guards: supervisorGuards,
  actions: {
    // ── Answers (effects: run after the transition) ─────────────────────────────────────────────────────
    refuse: ({ event }, params: Refusal) => {
      if ("ticket" in event) event.ticket.reject(new KekahydeError(params.code, params.message));
    },
    refuseUnknownModel: ({ context, event }) => {
      const name = modelNamed(event);
      if ("ticket" in event && name !== undefined) event.ticket.reject(unknownModel(context, name, event.type === "RUN" ? event.suggestions : []));
    },
    /** The load that parked generations waited for was refused: they get its error. */
    refuseParkedRuns: ({ context }, params: { error: KekahydeError }) => {
      const name = context.admission && loadName(context.admission.request);
      for (const run of (name && context.parkedRuns[name]) || []) rejectTicket(run.ticket, params.error);
    },
    refuseAllParkedRuns: ({ context }) => {
      const error = new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message);
      for (const runs of Object.values(context.parkedRuns)) for (const run of runs) rejectTicket(run.ticket, error);
    },
    refuseParkedJob: ({ context, event }) => {
      assertEvent(event, "CANCEL");
      const error = new KekahydeError("CLIENT_CLOSED", "The client closed the request while its model was being loaded.");
      for (const runs of Object.values(context.parkedRuns)) rejectTicket(runs.find((r) => r.id === event.job)?.ticket, error);
    },
    /** STOP {"id"} for a request that waits for its model to be admitted: it is dropped, and counted in the answer. */
    refuseParkedRequest: ({ context, event }) => {
      assertEvent(event, "STOP");
      const error = new KekahydeError("QUEUE_CLEARED", "Stopped by POST /stop {\"id\"} while its model was being loaded. Send it again if you still want it.");
      for (const run of parkedOf(context, event.request!)) rejectTicket(run.ticket, error);
      event.ticket.resolve({ stopped: false, dropped: parkedOf(context, event.request!).length });
    },
    answerNothingStopped: ({ event }) => {
      assertEvent(event, "STOP");
      event.ticket.resolve({ stopped: false, dropped: 0 });
    },
    answerNothingUnloaded: ({ event }) => {
      assertEvent(event, "UNLOAD");
      event.ticket.resolve({ unloaded: false });
    },
    refuseAdmission: ({ context }, params: { error: KekahydeError }) => {
      rejectTicket(context.admission?.request.ticket, params.error);
    },
    refusePendingLoads: ({ context }) => {
      const error = new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message);
      rejectTicket(context.admission?.request.ticket, error);
      for (const load of context.waitingLoads) rejectTicket(load.ticket, error);
    },
    resolveFanOut: ({ context, event }) => {
      assertEvent(event, "FANOUT.ANSWER");
      const f = context.fanOuts[event.fanOut];
      if (f.kind === "stop") resolveTicket<StopResult>(f.ticket, { stopped: f.stopped, dropped: f.dropped });
      else resolveTicket<UnloadResult>(f.ticket, { unloaded: f.unloaded });
    },
    rejectFanOut: ({ context, event }) => {
      assertEvent(event, "FANOUT.ANSWER");
      const f = context.fanOuts[event.fanOut];
      rejectTicket(f.ticket, f.error!);
    },

    // ── Sending to runtimes ─────────────────────────────────────────────────────────────────────────────
    forwardRun: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "RUN");
      const target = targetOf(context, event.model);
      if (!target) return; // guarded: a model is loaded
      enqueue.sendTo(target.ref, { type: "RUN", id: event.id, requestId: event.requestId, work: event.work, onText: event.onText, ticket: event.ticket });
    }),
    forwardCancel: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "CANCEL");
      for (const m of entries(context)) enqueue.sendTo(m.ref, event);
    }),
    forwardStop: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "STOP");
      enqueue.sendTo(context.models[event.model!].ref, { type: "STOP", all: event.all, ...(event.request !== undefined && { request: event.request }), ticket: event.ticket });
    }),
    forwardUnload: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "UNLOAD");
      enqueue.sendTo(context.models[event.model!].ref, { type: "UNLOAD", ticket: event.ticket });
    }),
    /** One STOP per model, raised so that each takes the same transitions as a STOP for that model. */
    fanOutStop: enqueueActions(({ context, event, enqueue, self }) => {
      assertEvent(event, "STOP");
      const id = `fanout-${context.fanOutCount + 1}`;
      const models = entries(context);
      enqueue.assign({
        fanOuts: { ...context.fanOuts, [id]: { kind: "stop", ticket: holdTicket("fanout", event.ticket), waiting: models.length, stopped: false, dropped: 0, error: null } },
        fanOutCount: context.fanOutCount + 1,
      });
      for (const m of models) {
        const part = createTicket<StopResult>((outcome) => self.send({ type: "FANOUT.ANSWER", fanOut: id, outcome }));
        enqueue.raise({ type: "STOP", model: m.name, all: event.all, ...(event.request !== undefined && { request: event.request }), ticket: part });
      }
    }),
    fanOutUnload: enqueueActions(({ context, event, enqueue, self }) => {
      assertEvent(event, "UNLOAD");
      const id = `fanout-${context.fanOutCount + 1}`;
      const models = entries(context);
      enqueue.assign({
        fanOuts: { ...context.fanOuts, [id]: { kind: "unload", ticket: holdTicket("fanout", event.ticket), waiting: models.length, unloaded: false, error: null } },
        fanOutCount: context.fanOutCount + 1,
      });
      for (const m of models) {
        const part = createTicket<UnloadResult>((outcome) => self.send({ type: "FANOUT.ANSWER", fanOut: id, outcome }));
        enqueue.raise({ type: "UNLOAD", model: m.name, ticket: part });
      }
    }),
    /**
     * A model leaves the set: unknown to routing from now on, departing until its runtime has freed its
     * memory. `ticket` is the UNLOAD's that asked for it, if a client did.
     */
    retireModel: enqueueActions(({ context, enqueue }, params: { name: string; ticket?: Ticket<UnloadResult> }) => {
      const m = context.models[params.name];
      if (!m) return; // guarded: a loaded model
      enqueue.cancel(keepAliveId(m.name));
      enqueue.sendTo(m.ref, { type: "UNLOAD", ticket: params.ticket ?? createTicket<UnloadResult>() });
      enqueue.assign({ models: without(context.models, [m.name]), departing: [...context.departing, departed(m)] });
    }),
    /** Evicts the models the placement chose, least recently used first, as retireModel does each. */
    retireEvicted: enqueueActions(({ context, enqueue }) => {
      const { evict } = context.admission!.placement as Extract<Placement, { ok: true }>;
      for (const name of evict) {
        enqueue.cancel(keepAliveId(name));
        enqueue.sendTo(context.models[name].ref, { type: "UNLOAD", ticket: createTicket<UnloadResult>() });
      }
      enqueue.assign({ models: without(context.models, evict), departing: [...context.departing, ...evict.map((name) => departed(context.models[name]))] });
    }),
    /** Hands the load to the model's runtime: a new one, or the idle one of that name, which replaces its model. */
    startLoad: enqueueActions(({ context, enqueue, self, system }) => {
      const { request, plan } = context.admission! as Admission & { plan: ModelPlan };
      const name = request.name ?? defaultModelName(request.path);
      const at = now(system);
      const existing = context.models[name];
      if (existing) enqueue.cancel(keepAliveId(name));
      // Spawned inside assign, not with spawnChild, because the entry keeps the reference.
      enqueue.assign(({ spawn }) => {
        const runtime =
          existing?.ref ??
          spawn("runtime", {
            id: `model:${name}:${at}`,
            input: {
              name,
              supervisor: self,
              maxQueue: context.maxQueue,
              maxGenerationMs: context.maxGenerationMs,
              slots: context.parallel,
            },
          });
        const entry: ModelEntry = {
          name,
          ref: runtime,
          path: plan.path,
          phase: existing ? "loading" : "new",
          bytes: plan.bytes,
          fileSize: plan.fileSize,
          mtimeMs: plan.mtimeMs,
          loadedAt: at,
          loadOrder: context.uses + 1,
          lastUsed: at,
          useOrder: context.uses + 1,
          keepAliveMs: request.keepAliveMs ?? existing?.keepAliveMs ?? context.keepAliveMs,
          expiresAt: null,
        };
        return { models: { ...context.models, [name]: entry }, uses: context.uses + 1, lastError: null };
      });
      enqueue.sendTo(({ context: c }) => c.models[name].ref, { type: "LOAD", plan, ticket: takeTicket<LoadResult>(request.ticket).ticket });
      // Generations that asked for this model wait for it in its runtime's queue, in order.
      for (const run of context.parkedRuns[name] ?? []) {
        enqueue.sendTo(({ context: c }) => c.models[name].ref, { type: "RUN", id: run.id, requestId: run.requestId, work: run.work, ...takeTicket<JobResult>(run.ticket) });
      }
      enqueue.assign({ parkedRuns: without(context.parkedRuns, [name]) });
    }),
    /** Loads the model a generation asked for by name: a load of the catalogue's file, as /load_model does. */
    requestLoadOnDemand: enqueueActions(({ event, enqueue }) => {
      assertEvent(event, "RUN");
      enqueue.raise({ type: "LOAD", path: event.load!.path, name: event.model!, settings: event.load!.settings ?? {}, ...(event.keepAliveMs !== undefined && { keepAliveMs: event.keepAliveMs }), ticket: createTicket<LoadResult>() });
    }),
    armKeepAlive: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "MODEL.PHASE");
      const m = entryOf(context, event.ref);
      if (!m) return; // guarded: the report of a loaded model
      enqueue.cancel(keepAliveId(m.name));
      enqueue.raise({ type: "KEEPALIVE.EXPIRED", name: m.name }, { id: keepAliveId(m.name), delay: m.keepAliveMs });
    }),
    cancelKeepAlive: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "MODEL.PHASE");
      const m = entryOf(context, event.ref);
      if (m) enqueue.cancel(keepAliveId(m.name));
    }),
    cancelAllKeepAlives: enqueueActions(({ context, enqueue }) => {
      for (const m of entries(context)) enqueue.cancel(keepAliveId(m.name));
    }),
    /** The model's runtime has ended up empty (its load failed, its engine failed or was lost): it leaves. */
    dropModel: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "MODEL.PHASE");
      const m = entryOf(context, event.ref);
      if (!m) return; // guarded: the report of a loaded model
      enqueue.cancel(keepAliveId(m.name));
      enqueue.stopChild(m.ref);
      enqueue.assign({ models: without(context.models, [m.name]) });
    }),
    /** A departing runtime has freed its model (or shut down): it is stopped and forgotten. */
    releaseDeparted: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "MODEL.PHASE");
      enqueue.stopChild(event.ref);
      enqueue.assign({ departing: context.departing.filter((m) => m.ref !== event.ref) });
    }),
    dropStopped: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "MODEL.PHASE");
      enqueue.stopChild(event.ref);
      enqueue.assign({
        models: Object.fromEntries(entries(context).filter((m) => m.ref !== event.ref).map((m) => [m.name, m])),
        departing: context.departing.filter((m) => m.ref !== event.ref),
      });
    }),
    shutDownModels: enqueueActions(({ context, enqueue }) => {
      for (const m of [...entries(context), ...context.departing]) enqueue.sendTo(m.ref, { type: "SHUTDOWN" });
    }),

    // ── Context ─────────────────────────────────────────────────────────────────────────────────────────
    storeSample: assign({
      resources: ({ event }) => {
        assertEvent(event, "MONITOR.SAMPLE");
        return event.sample;
      },
    }),
    /** A request is on its way to a model: it was used now, and an idle one is about to work. */
    markUsed: assign({
      models: ({ context, event, system }) => {
        assertEvent(event, "RUN");
        const target = targetOf(context, event.model);
        if (!target) return context.models; // guarded: a model is loaded
        const used: ModelEntry = {
          ...target,
          phase: target.phase === "idle" ? "busy" : target.phase,
          expiresAt: null,
          lastUsed: now(system),
          useOrder: context.uses + 1,
          keepAliveMs: event.keepAliveMs ?? target.keepAliveMs,
        };
        return { ...context.models, [target.name]: used };
      },
      uses: ({ context }) => context.uses + 1,
    }),
    parkRun: assign({
      parkedRuns: ({ context, event }) => {
        assertEvent(event, "RUN");
        const { type: _, ticket, onText, ...request } = event;
        const run: ParkedRun = { ...request, ticket: holdTicket("run", ticket) };
        holdListener(run.ticket, onText);
        return { ...context.parkedRuns, [run.model!]: [...(context.parkedRuns[run.model!] ?? []), run] };
      },
    }),
    dropParkedRequest: assign({
      parkedRuns: ({ context, event }) => {
        assertEvent(event, "STOP");
        const stopped = parkedOf(context, event.request!);
        return Object.fromEntries(Object.entries(context.parkedRuns).map(([name, runs]) => [name, runs.filter((r) => !stopped.includes(r))]));
      },
    }),
    dropParkedJob: assign({
      parkedRuns: ({ context, event }) => {
        assertEvent(event, "CANCEL");
        return Object.fromEntries(Object.entries(context.parkedRuns).map(([name, runs]) => [name, runs.filter((r) => r.id !== event.job)]));
      },
    }),
    clearParkedRuns: assign({ parkedRuns: {} }),
    /** Forgets the generations parked for the load being refused (they have been answered). */
    clearRefusedParkedRuns: assign({
      parkedRuns: ({ context }) => (context.admission ? without(context.parkedRuns, [loadName(context.admission.request)]) : context.parkedRuns),
    }),
    queueLoad: assign({
      waitingLoads: ({ context, event }) => {
        assertEvent(event, "LOAD");
        const { type: _, ticket, ...request } = event;
        return [...context.waitingLoads, { ...request, ticket: holdTicket("load", ticket) }];
      },
    }),
    takeNextLoad: assign(({ context }) => ({ admission: { request: context.waitingLoads[0], plan: null, placement: null }, waitingLoads: context.waitingLoads.slice(1) })),
    recordPlan: assign({
      admission: ({ context }, params: { plan: ModelPlan }) => ({
        ...context.admission!,
        plan: params.plan,
        placement: placementOf(context, context.admission!.request, params.plan),
      }),
    }),
    clearAdmission: assign({ admission: null }),
    clearLoads: assign({ admission: null, waitingLoads: [] }),
    recordError: assign({ lastError: ({ system }, params: { error: KekahydeError }) => errorRecord(params.error, now(system)) }),
    /** An engine of this file was lost: counted, and the file quarantined if it crashed while loading or too often. */
    recordCrash: assign({
      crashes: ({ context, event }) => {
        assertEvent(event, "MODEL.PHASE");
        const m = entryOf(context, event.ref);
        if (!m || !event.error) return context.crashes; // guarded: an engine loss of a loaded model
        const known = context.crashes[m.path];
        const same = known && known.fileSize === m.fileSize && known.mtimeMs === m.mtimeMs;
        const losses = (same ? known.losses : 0) + 1;
        const whileLoading = m.phase === "new" || m.phase === "loading";
        const record: CrashRecord = { fileSize: m.fileSize, mtimeMs: m.mtimeMs, losses, quarantined: whileLoading || losses >= CRASHES_BEFORE_QUARANTINE, error: event.error };
        return { ...context.crashes, [m.path]: record };
      },
    }),
    recordModelError: assign({
      lastError: ({ context, event }) => {
        assertEvent(event, "MODEL.PHASE");
        return event.error ?? context.lastError;
      },
    }),
    /** Keeps the phase a model reports; idle starts its keep-alive clock, anything else stops it. */
    recordPhase: assign({
      models: ({ context, event, system }) => {
        assertEvent(event, "MODEL.PHASE");
        const m = entryOf(context, event.ref);
        if (!m) return context.models; // guarded: the report of a loaded model
        const idle = event.phase === "idle";
        const at = now(system);
        const expiresAt = idle && m.keepAliveMs > 0 ? at + m.keepAliveMs : null;
        return { ...context.models, [m.name]: { ...m, phase: event.phase, expiresAt, ...(idle && { lastUsed: at, useOrder: context.uses + 1 }) } };
      },
      uses: ({ context, event }) => context.uses + (event.type === "MODEL.PHASE" && event.phase === "idle" ? 1 : 0),
    }),
    recordFanOutAnswer: assign({
      fanOuts: ({ context, event }) => {
        assertEvent(event, "FANOUT.ANSWER");
        const f = context.fanOuts[event.fanOut];
        const o = event.outcome;
        const error = f.error ?? (o.ok ? null : o.error);
        const next: FanOut =
          f.kind === "stop"
            ? { ...f, waiting: f.waiting - 1, error, ...(o.ok && "stopped" in o.value && { stopped: f.stopped || o.value.stopped, dropped: f.dropped + o.value.dropped }) }
            : { ...f, waiting: f.waiting - 1, error, ...(o.ok && "unloaded" in o.value && { unloaded: f.unloaded || o.value.unloaded }) };
        return { ...context.fanOuts, [event.fanOut]: next };
      },
    }),
    closeFanOut: assign({
      fanOuts: ({ context, event }) => {
        assertEvent(event, "FANOUT.ANSWER");
        const { [event.fanOut]: _, ...rest } = context.fanOuts;
        return rest;
      },
    }),
  },
});
