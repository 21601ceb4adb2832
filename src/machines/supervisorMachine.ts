import { assertEvent, assign, enqueueActions, fromPromise, setup } from "xstate";
import { DEFAULT_KEEP_ALIVE_MS, DEFAULT_MEMORY_FRACTION } from "../domain/defaults.ts";
import { defaultModelName, type LoadSettings, type ModelPlan } from "../domain/models.ts";
import type { Engine } from "../engine/types.ts";
import { KekahydeError, toKekahydeError } from "../errors.ts";
import { monitorActor } from "../monitor/monitorActor.ts";
import { EMPTY_SAMPLE } from "../monitor/resourceSampler.ts";
import { CRASHES_BEFORE_QUARANTINE, ENGINE_LOSSES, parkedRefusalParams, placementIs, placementOf, quarantineOf, refusalParams, refusals, unknownModel } from "./admission.ts";
import type { Placement } from "./placement.ts";
import { NO_MODEL, SHUTTING_DOWN, type Refusal } from "./refusals.ts";
import { errorRecord, runtimeMachine, type LoadResult, type StopResult, type UnloadResult } from "./runtimeMachine.ts";
import { createTicket, type Ticket } from "./ticket.ts";
import type { Admission, CrashRecord, FanOut, LoadRequest, ModelEntry, RunRequest, SupervisorContext, SupervisorEvent, SupervisorInput } from "./supervisorTypes.ts";

/**
 * The supervisor: owns the loaded models, one runtime-machine actor each, and decides which model a request
 * goes to, which models make room for a new one (least recently used idle ones first, within `maxModels`,
 * the memory budget and the machine's memory), and when an idle model's keep-alive has run out.
 *
 *   serving.ready ──LOAD──▶ admitting ──(file read once: the plan)──▶ placing ──(fits)──▶ evicting ──▶ ready
 *                  (checks the file)  └─(bad file)─▶ ready           │                 (evicted models freed;
 *                                                                     └─(no room: one guard per reason)─▶ ready
 *   SHUTDOWN ──▶ stopping (every model shuts down) ──▶ stopped
 *
 * Every decision is a guarded transition: which refusal a load gets, what each phase a runtime reports means,
 * whether an UNLOAD retires an idle model or goes to a working one, when keep-alive ends a model. Requests
 * for a model are forwarded to its runtime with their ticket, so the runtime answers them; a STOP or UNLOAD
 * for every model is fanned out as one event per model and its answers are gathered as FANOUT.ANSWER events.
 * A model that leaves the set (evicted, expired, unloaded) is `departing` until its runtime reports that its
 * memory is free; a new load waits for that in `evicting`.
 */

export type { Admission, CrashRecord, FanOut, LoadRequest, ModelEntry, RunRequest, RuntimeRef, SupervisorContext, SupervisorEvent, SupervisorInput, SupervisorRequestEvent } from "./supervisorTypes.ts";
export { CRASHES_BEFORE_QUARANTINE };

const entries = (context: SupervisorContext): ModelEntry[] => Object.values(context.models);

/** The model requests without a `model` go to: the one loaded most recently. */
export function defaultModel(context: SupervisorContext): ModelEntry | null {
  return entries(context).reduce<ModelEntry | null>((best, m) => (best === null || m.loadOrder > best.loadOrder ? m : best), null);
}

const entryOf = (context: SupervisorContext, ref: unknown): ModelEntry | undefined => entries(context).find((m) => m.ref === ref);
const departingOf = (context: SupervisorContext, ref: unknown): ModelEntry | undefined => context.departing.find((m) => m.ref === ref);
const targetOf = (context: SupervisorContext, model: string | undefined): ModelEntry | null => (model !== undefined ? (context.models[model] ?? null) : defaultModel(context));
/** The id of a model's keep-alive timer: one per model, cancelled when it leaves idle. */
const keepAliveId = (name: string) => `keepalive:${name}`;
const without = <T,>(byName: Record<string, T>, names: readonly string[]): Record<string, T> => Object.fromEntries(Object.entries(byName).filter(([name]) => !names.includes(name)));
const departed = (m: ModelEntry): ModelEntry => ({ ...m, phase: "unloading", expiresAt: null });
const modelNamed = (event: SupervisorEvent): string | undefined => ("model" in event ? event.model : undefined);

/** The parked generations of request `request` (the client's id, or the job id it gave none). */
const parkedOf = (context: SupervisorContext, request: string): RunRequest[] => Object.values(context.parkedRuns).flat().filter((r) => (r.requestId ?? r.id) === request);

/** The name a load will have. */
const loadName = (load: LoadRequest): string => load.name ?? defaultModelName(load.path);
/** Whether a load of this name is being admitted or waits to be. */
const loadPending = (context: SupervisorContext, name: string): boolean =>
  (context.admission !== null && loadName(context.admission.request) === name) || context.waitingLoads.some((l) => loadName(l) === name);

/** Reads the file once and plans the load before anything is evicted for it. */
const admitModel = fromPromise<ModelPlan, { engine: Engine; path: string; settings: LoadSettings }>(({ input }) => input.engine.plan(input.path, input.settings));

/**
 * The actions of a refused load, one list for every reason: the requester and the generations parked for the
 * model get the refusal, it becomes the last error, and the admission ends.
 */
const refuseLoad = (reason: keyof typeof refusals) =>
  [
    { type: "refuseAdmission", params: refusalParams(reason) },
    { type: "refuseParkedRuns", params: parkedRefusalParams(reason) },
    { type: "recordError", params: refusalParams(reason) },
    "clearRefusedParkedRuns",
    "clearAdmission",
  ] as const;

export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    input: {} as SupervisorInput,
  },
  actors: {
    runtime: runtimeMachine,
    admitModel,
    monitor: monitorActor,
  },
  guards: {
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

    isQuarantinedFile: ({ context }) => quarantineOf(context) !== null,
    placementFits: ({ context }) => context.admission?.placement?.ok === true,
    blockedByLoadingModels: ({ context }) => placementIs(context, "loading"),
    blockedByBusyModels: ({ context }) => placementIs(context, "busy"),
    overMachineMemory: ({ context }) => placementIs(context, "machine"),
    overMemoryBudget: ({ context }) => placementIs(context, "budget"),
    noneDeparting: ({ context }) => context.departing.length === 0,

    // What a runtime's MODEL.PHASE report means, tried in this order.
    isDepartedReport: ({ context, event }) => event.type === "MODEL.PHASE" && departingOf(context, event.ref) !== undefined && (event.phase === "empty" || event.phase === "stopped"),
    isDepartingReport: ({ context, event }) => event.type === "MODEL.PHASE" && departingOf(context, event.ref) !== undefined,
    isFreshRuntimeReport: ({ context, event }) => event.type === "MODEL.PHASE" && event.phase === "empty" && entryOf(context, event.ref)?.phase === "new",
    reportsIdleUnloadingAtOnce: ({ context, event }) => event.type === "MODEL.PHASE" && event.phase === "idle" && entryOf(context, event.ref)?.keepAliveMs === 0,
    reportsIdleKeptForever: ({ context, event }) => event.type === "MODEL.PHASE" && event.phase === "idle" && (entryOf(context, event.ref)?.keepAliveMs ?? 0) < 0,
    reportsIdle: ({ context, event }) => event.type === "MODEL.PHASE" && event.phase === "idle" && entryOf(context, event.ref) !== undefined,
    reportsEngineLoss: ({ context, event }) =>
      event.type === "MODEL.PHASE" && event.phase === "empty" && entryOf(context, event.ref) !== undefined && event.error !== null && ENGINE_LOSSES.has(event.error.code),
    /** A busy model's engine was lost and its runtime loads it again: the loss counts, the model stays. */
    reportsReloadAfterLoss: ({ context, event }) =>
      event.type === "MODEL.PHASE" && event.phase === "loading" && entryOf(context, event.ref)?.phase === "busy" && event.error !== null && ENGINE_LOSSES.has(event.error.code),
    reportsEmpty: ({ context, event }) => event.type === "MODEL.PHASE" && event.phase === "empty" && entryOf(context, event.ref) !== undefined,
    reportsWork: ({ context, event }) => event.type === "MODEL.PHASE" && entryOf(context, event.ref) !== undefined,
    reportsStopped: ({ event }) => event.type === "MODEL.PHASE" && event.phase === "stopped",

    isIdleModel: ({ context, event }) => event.type === "KEEPALIVE.EXPIRED" && context.models[event.name]?.phase === "idle",
    completesFanOutWithError: ({ context, event }) => {
      if (event.type !== "FANOUT.ANSWER") return false;
      const f = context.fanOuts[event.fanOut];
      return f !== undefined && f.waiting === 1 && (f.error !== null || !event.outcome.ok);
    },
    completesFanOut: ({ context, event }) => event.type === "FANOUT.ANSWER" && context.fanOuts[event.fanOut]?.waiting === 1,
    allStopped: ({ context }) => entries(context).length === 0 && context.departing.length === 0,
  },
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
      for (const run of (name && context.parkedRuns[name]) || []) run.ticket.reject(params.error);
    },
    refuseAllParkedRuns: ({ context }) => {
      const error = new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message);
      for (const runs of Object.values(context.parkedRuns)) for (const run of runs) run.ticket.reject(error);
    },
    refuseParkedJob: ({ context, event }) => {
      assertEvent(event, "CANCEL");
      for (const runs of Object.values(context.parkedRuns)) runs.find((r) => r.id === event.job)?.ticket.reject(new KekahydeError("CLIENT_CLOSED", "The client closed the request while its model was being loaded."));
    },
    /** STOP {"id"} for a request that waits for its model to be admitted: it is dropped, and counted in the answer. */
    refuseParkedRequest: ({ context, event }) => {
      assertEvent(event, "STOP");
      const error = new KekahydeError("QUEUE_CLEARED", "Stopped by POST /stop {\"id\"} while its model was being loaded. Send it again if you still want it.");
      for (const run of parkedOf(context, event.request!)) run.ticket.reject(error);
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
      context.admission?.request.ticket.reject(params.error);
    },
    refusePendingLoads: ({ context }) => {
      const error = new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message);
      context.admission?.request.ticket.reject(error);
      for (const load of context.waitingLoads) load.ticket.reject(error);
    },
    resolveFanOut: ({ context, event }) => {
      assertEvent(event, "FANOUT.ANSWER");
      const f = context.fanOuts[event.fanOut];
      if (f.kind === "stop") f.ticket.resolve({ stopped: f.stopped, dropped: f.dropped });
      else f.ticket.resolve({ unloaded: f.unloaded });
    },
    rejectFanOut: ({ context, event }) => {
      assertEvent(event, "FANOUT.ANSWER");
      const f = context.fanOuts[event.fanOut];
      f.ticket.reject(f.error!);
    },

    // ── Sending to runtimes ─────────────────────────────────────────────────────────────────────────────
    forwardRun: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "RUN");
      const target = targetOf(context, event.model)!;
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
        fanOuts: { ...context.fanOuts, [id]: { kind: "stop", ticket: event.ticket, waiting: models.length, stopped: false, dropped: 0, error: null } },
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
        fanOuts: { ...context.fanOuts, [id]: { kind: "unload", ticket: event.ticket, waiting: models.length, unloaded: false, error: null } },
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
    startLoad: enqueueActions(({ context, enqueue, self }) => {
      const { request, plan } = context.admission! as Admission & { plan: ModelPlan };
      const name = request.name ?? defaultModelName(request.path);
      const now = Date.now();
      const existing = context.models[name];
      if (existing) enqueue.cancel(keepAliveId(name));
      // Spawned inside assign, not with spawnChild, because the entry keeps the reference.
      enqueue.assign(({ spawn }) => {
        const runtime =
          existing?.ref ??
          spawn("runtime", {
            id: `model:${name}:${now}`,
            input: {
              engine: context.engine,
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
          loadedAt: now,
          loadOrder: context.uses + 1,
          lastUsed: now,
          useOrder: context.uses + 1,
          keepAliveMs: request.keepAliveMs ?? existing?.keepAliveMs ?? context.keepAliveMs,
          expiresAt: null,
        };
        return { models: { ...context.models, [name]: entry }, uses: context.uses + 1, lastError: null };
      });
      enqueue.sendTo(({ context: c }) => c.models[name].ref, { type: "LOAD", plan, ticket: request.ticket });
      // Generations that asked for this model wait for it in its runtime's queue, in order.
      for (const run of context.parkedRuns[name] ?? []) {
        enqueue.sendTo(({ context: c }) => c.models[name].ref, { type: "RUN", id: run.id, requestId: run.requestId, work: run.work, onText: run.onText, ticket: run.ticket });
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
      const m = entryOf(context, event.ref)!;
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
      const m = entryOf(context, event.ref)!;
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
      models: ({ context, event }) => {
        assertEvent(event, "RUN");
        const target = targetOf(context, event.model)!;
        const used: ModelEntry = {
          ...target,
          phase: target.phase === "idle" ? "busy" : target.phase,
          expiresAt: null,
          lastUsed: Date.now(),
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
        const { type: _, ...run } = event;
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
        const { type: _, ...load } = event;
        return [...context.waitingLoads, load];
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
    recordError: assign({ lastError: (_, params: { error: KekahydeError }) => errorRecord(params.error) }),
    /** An engine of this file was lost: counted, and the file quarantined if it crashed while loading or too often. */
    recordCrash: assign({
      crashes: ({ context, event }) => {
        assertEvent(event, "MODEL.PHASE");
        const m = entryOf(context, event.ref)!;
        const known = context.crashes[m.path];
        const same = known && known.fileSize === m.fileSize && known.mtimeMs === m.mtimeMs;
        const losses = (same ? known.losses : 0) + 1;
        const whileLoading = m.phase === "new" || m.phase === "loading";
        const record: CrashRecord = { fileSize: m.fileSize, mtimeMs: m.mtimeMs, losses, quarantined: whileLoading || losses >= CRASHES_BEFORE_QUARANTINE, error: event.error! };
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
      models: ({ context, event }) => {
        assertEvent(event, "MODEL.PHASE");
        const m = entryOf(context, event.ref)!;
        const idle = event.phase === "idle";
        const expiresAt = idle && m.keepAliveMs > 0 ? Date.now() + m.keepAliveMs : null;
        return { ...context.models, [m.name]: { ...m, phase: event.phase, expiresAt, ...(idle && { lastUsed: Date.now(), useOrder: context.uses + 1 }) } };
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
}).createMachine({
  id: "supervisor",
  context: ({ input }) => ({
    engine: input.engine,
    sampleResources: input.sampleResources,
    monitorIntervalMs: input.monitorIntervalMs ?? 1000,
    maxModels: Math.max(1, input.maxModels ?? 1),
    maxMemory: input.maxMemory ?? { fraction: DEFAULT_MEMORY_FRACTION },
    keepAliveMs: input.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS,
    parallel: Math.max(1, input.parallel ?? 1),
    maxQueue: input.maxQueue,
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
    input: ({ context }) => ({ sample: context.sampleResources, intervalMs: context.monitorIntervalMs }),
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
        "MODEL.PHASE": [
          { guard: "isDepartedReport", actions: "releaseDeparted" },
          { guard: "isDepartingReport" },
          // A fresh runtime's first report is its initial `empty`, before its load starts: not a departure.
          { guard: "isFreshRuntimeReport" },
          { guard: "reportsIdleUnloadingAtOnce", actions: ["recordPhase", { type: "retireModel", params: ({ context, event }) => ({ name: entryOf(context, event.ref)!.name }) }] },
          { guard: "reportsIdleKeptForever", actions: "recordPhase" },
          { guard: "reportsIdle", actions: ["recordPhase", "armKeepAlive"] },
          { guard: "reportsEngineLoss", actions: ["recordModelError", "recordCrash", "dropModel"] },
          { guard: "reportsEmpty", actions: ["recordModelError", "dropModel"] },
          { guard: "reportsReloadAfterLoss", actions: ["recordModelError", "recordCrash", "recordPhase", "cancelKeepAlive"] },
          { guard: "reportsWork", actions: ["recordPhase", "cancelKeepAlive"] },
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
            input: ({ context }) => ({ engine: context.engine, path: context.admission!.request.path, settings: { ...context.admission!.request.settings, parallel: context.parallel } }),
            onDone: { target: "placing", actions: { type: "recordPlan", params: ({ event }) => ({ plan: event.output }) } },
            onError: {
              target: "ready",
              actions: [
                { type: "refuseAdmission", params: ({ event }) => ({ error: toKekahydeError(event.error, "MODEL_INVALID") }) },
                { type: "refuseParkedRuns", params: ({ event }) => ({ error: toKekahydeError(event.error, "MODEL_INVALID") }) },
                { type: "recordError", params: ({ event }) => ({ error: toKekahydeError(event.error, "MODEL_INVALID") }) },
                "clearRefusedParkedRuns",
                "clearAdmission",
              ],
            },
          },
          on: {
            LOAD: { actions: "queueLoad" },
          },
        },
        placing: {
          always: [
            { guard: "isQuarantinedFile", target: "ready", actions: refuseLoad("quarantined") },
            { guard: "placementFits", target: "evicting", actions: "retireEvicted" },
            { guard: "blockedByLoadingModels", target: "ready", actions: refuseLoad("loading") },
            { guard: "blockedByBusyModels", target: "ready", actions: refuseLoad("busy") },
            { guard: "overMachineMemory", target: "ready", actions: refuseLoad("machine") },
            { guard: "overMemoryBudget", target: "ready", actions: refuseLoad("budget") },
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
